#!/usr/bin/env bash
# Checks the compose stack's Prometheus files with promtool (Debian's prometheus package, which
# scripts/install-packages.sh installs): the alert rules parse, their unit tests pass, and the
# server configuration that loads them is valid. Offline: nothing is scraped. Exits non-zero on
# the first failure.
source "$(dirname "$0")/lib.sh"
command -v promtool >/dev/null \
  || die "promtool not found: scripts/install-packages.sh installs it (Debian package prometheus)"
cd "$ROOT"
promtool check rules deploy/prometheus/rules.yml
promtool test rules deploy/prometheus/rules.test.yml
promtool check config deploy/prometheus.yml
