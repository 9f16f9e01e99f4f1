//! The conformance suite against the in-process bus.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

mod conformance;

conformance::conformance_tests!(orstream_bus::Bus::memory);
