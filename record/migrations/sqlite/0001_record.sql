-- The surgical record, version 1 (SQLite). Times are BIGINT nanoseconds since the Unix
-- epoch, UTC, exactly as on the wire; see sink/SCHEMA.md.

CREATE TABLE cases (
    case_id    TEXT PRIMARY KEY,
    started_ns BIGINT NOT NULL
);

CREATE TABLE streams (
    case_id        TEXT NOT NULL,
    stream_id      TEXT NOT NULL,
    first_frame_ns BIGINT NOT NULL,
    last_frame_ns  BIGINT NOT NULL,
    results        BIGINT NOT NULL,
    PRIMARY KEY (case_id, stream_id)
);

CREATE TABLE stream_events (
    stream_id     TEXT NOT NULL,
    case_id       TEXT NOT NULL,
    session_epoch BIGINT NOT NULL,
    time_ns       BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    detail        TEXT NOT NULL,
    PRIMARY KEY (stream_id, session_epoch, kind, time_ns)
);

CREATE TABLE events (
    event_id        TEXT PRIMARY KEY,
    case_id         TEXT NOT NULL,
    stream_id       TEXT NOT NULL,
    class_id        BIGINT NOT NULL,
    label           TEXT NOT NULL,
    category        TEXT NOT NULL,
    start_ns        BIGINT NOT NULL,
    end_ns          BIGINT NOT NULL,
    session_epoch   BIGINT NOT NULL,
    first_seq       BIGINT NOT NULL,
    last_seq        BIGINT NOT NULL,
    frames_seen     BIGINT NOT NULL,
    peak_confidence REAL NOT NULL,
    mean_confidence REAL NOT NULL,
    model_name      TEXT NOT NULL,
    model_version   TEXT NOT NULL,
    model_digest    TEXT NOT NULL,
    UNIQUE (stream_id, session_epoch, class_id, first_seq)
);
CREATE INDEX events_by_case ON events (case_id, start_ns);

CREATE TABLE gaps (
    event_id      TEXT PRIMARY KEY,
    case_id       TEXT NOT NULL,
    stream_id     TEXT NOT NULL,
    kind          TEXT NOT NULL,
    session_epoch BIGINT NOT NULL,
    first_seq     BIGINT NOT NULL,
    last_seq      BIGINT NOT NULL,
    start_ns      BIGINT NOT NULL,
    end_ns        BIGINT NOT NULL,
    frames        BIGINT NOT NULL,
    reason        TEXT NOT NULL,
    UNIQUE (stream_id, kind, session_epoch, first_seq)
);
CREATE INDEX gaps_by_case ON gaps (case_id, start_ns);

CREATE TABLE frames (
    stream_id     TEXT NOT NULL,
    session_epoch BIGINT NOT NULL,
    seq           BIGINT NOT NULL,
    case_id       TEXT NOT NULL,
    capture_ns    BIGINT NOT NULL,
    status        TEXT NOT NULL,
    model_version TEXT NOT NULL,
    instances     TEXT NOT NULL,
    PRIMARY KEY (stream_id, session_epoch, seq)
);

CREATE TABLE anomalies (
    source_topic     TEXT NOT NULL,
    source_partition BIGINT NOT NULL,
    source_offset    BIGINT NOT NULL,
    kind             TEXT NOT NULL,
    stream_id        TEXT NOT NULL,
    detail           TEXT NOT NULL,
    PRIMARY KEY (source_topic, source_partition, source_offset, kind)
);

CREATE TABLE consumer_offsets (
    topic        TEXT NOT NULL,
    partition_id BIGINT NOT NULL,
    next_offset  BIGINT NOT NULL,
    PRIMARY KEY (topic, partition_id)
);

CREATE TABLE derivation_state (
    stream_id TEXT PRIMARY KEY,
    version   BIGINT NOT NULL,
    state     TEXT NOT NULL
);

CREATE TABLE event_outbox (
    position INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    case_id  TEXT NOT NULL,
    payload  BLOB NOT NULL
);
