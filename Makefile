# The two commands of the README. Each does all set-up it needs first (idempotent).
.PHONY: demo test stack-up stack-down

demo:
	scripts/demo.sh

test:
	scripts/test.sh

# Start / stop the local Kafka and PostgreSQL (scripts/kafka.sh, scripts/postgres.sh).
stack-up:
	scripts/bootstrap.sh

stack-down:
	scripts/kafka.sh stop
	scripts/postgres.sh stop
