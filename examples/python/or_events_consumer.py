#!/usr/bin/env python3
"""Follows orstream's derived events (or.events.v1) and tool tracks (or.tracks.v1).

A downstream consumer as a hospital system would write one: its own consumer group, reading
only committed messages (the sink publishes in transactions), classes generated from the
contract (proto/proto/orstream/v1/orstream.proto, by scripts/python-contract.sh), the
schema-version header checked, events deduplicated on event_id (the sink may publish one
twice after a crash) and track frames on (stream_id, session_epoch, seq), offsets committed
after what was read is written out. Each item is printed as one JSON line on stdout;
messages it cannot read are named on stderr and skipped.

    scripts/python-contract.sh examples/python/generated
    .venv/bin/python examples/python/or_events_consumer.py --bootstrap 127.0.0.1:9092 \
        --group hospital-records --contract examples/python/generated

Needs confluent-kafka and protobuf (scripts/requirements.txt).
"""

import argparse
import collections
import json
import signal
import sys
import time

from confluent_kafka import Consumer, KafkaError

SCHEMA_HEADER = "orstream-schema-version"
SCHEMA_VERSION = b"1"
REMEMBERED = 100_000


class Seen:
    """The last REMEMBERED keys, to drop what comes twice."""

    def __init__(self):
        self.keys = collections.OrderedDict()

    def first_time(self, key):
        if key in self.keys:
            return False
        self.keys[key] = None
        if len(self.keys) > REMEMBERED:
            self.keys.popitem(last=False)
        return True


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--group", default="orstream-example-consumer")
    p.add_argument("--events-topic", default="or.events.v1")
    p.add_argument("--tracks-topic", default="or.tracks.v1")
    p.add_argument("--contract", required=True,
                   help="directory of the generated classes (scripts/python-contract.sh)")
    p.add_argument("--property", action="append", default=[], metavar="KEY=VALUE",
                   help="a further librdkafka property (security.protocol, sasl.*, ssl.*)")
    p.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS",
                   help="exit after this long without a message (default: run until SIGTERM)")
    return p.parse_args()


def main():
    args = parse_args()
    sys.path.insert(0, args.contract)
    from google.protobuf import json_format
    from orstream.v1 import orstream_pb2 as contract

    config = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
    }
    for item in args.property:
        key, _, value = item.partition("=")
        config[key] = value
    consumer = Consumer(config)
    consumer.subscribe([args.events_topic, args.tracks_topic])
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    events, frames = Seen(), Seen()
    last_message = time.monotonic()

    def skip(message, why):
        print(f"skipped {message.topic()}[{message.partition()}]@{message.offset()}: {why}",
              file=sys.stderr, flush=True)

    try:
        while not stopping:
            batch = consumer.consume(num_messages=500, timeout=0.5)
            if not batch:
                if args.idle_exit is not None and time.monotonic() - last_message > args.idle_exit:
                    break
                continue
            last_message = time.monotonic()
            for message in batch:
                if message.error():
                    if message.error().code() != KafkaError._PARTITION_EOF:
                        print(f"bus error: {message.error()}", file=sys.stderr, flush=True)
                    continue
                headers = dict(message.headers() or [])
                if headers.get(SCHEMA_HEADER) != SCHEMA_VERSION:
                    skip(message, f"schema version {headers.get(SCHEMA_HEADER)!r}, not 1")
                    continue
                is_event = message.topic() == args.events_topic
                item = contract.SurgicalEvent() if is_event else contract.TrackFrame()
                try:
                    item.ParseFromString(message.value() or b"")
                except Exception as error:  # a message that is not the contract's
                    skip(message, f"not a {type(item).__name__}: {error}")
                    continue
                if is_event:
                    if not item.event_id:
                        skip(message, "an event without event_id")
                        continue
                    if not events.first_time(item.event_id):
                        continue
                elif not frames.first_time((item.stream_id, item.session_epoch, item.seq)):
                    continue
                body = json_format.MessageToDict(item, preserving_proto_field_name=True)
                print(json.dumps({"item": "event" if is_event else "track_frame", **body}),
                      flush=True)
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
