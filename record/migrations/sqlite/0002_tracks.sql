-- Tool tracks (SQLite). A track is one instrument followed over time on one stream; positions are
-- normalized image coordinates (x / width, y / height), speeds per second. See SCHEMA.md.

-- Presence intervals of tools: the tracks seen in the interval, ascending, space-separated.
ALTER TABLE events ADD COLUMN track_ids TEXT NOT NULL DEFAULT '';

CREATE TABLE tracks (
    event_id        TEXT PRIMARY KEY,
    case_id         TEXT NOT NULL,
    stream_id       TEXT NOT NULL,
    track_id        BIGINT NOT NULL,
    class_id        BIGINT NOT NULL,
    label           TEXT NOT NULL,
    session_epoch   BIGINT NOT NULL,
    first_seq       BIGINT NOT NULL,
    last_seq        BIGINT NOT NULL,
    start_ns        BIGINT NOT NULL,
    end_ns          BIGINT NOT NULL,
    frames_seen     BIGINT NOT NULL,
    path_length     REAL NOT NULL,
    mean_speed      REAL NOT NULL,
    peak_speed      REAL NOT NULL,
    idle_ns         BIGINT NOT NULL,
    reentries       BIGINT NOT NULL,
    peak_confidence REAL NOT NULL,
    model_name      TEXT NOT NULL,
    model_version   TEXT NOT NULL,
    model_digest    TEXT NOT NULL,
    UNIQUE (stream_id, track_id)
);
CREATE INDEX tracks_by_case ON tracks (case_id, start_ns);

CREATE TABLE track_points (
    stream_id TEXT NOT NULL,
    track_id  BIGINT NOT NULL,
    seq       BIGINT NOT NULL,
    case_id   TEXT NOT NULL,
    time_ns   BIGINT NOT NULL,
    cx        REAL NOT NULL,
    cy        REAL NOT NULL,
    x0        REAL NOT NULL,
    y0        REAL NOT NULL,
    x1        REAL NOT NULL,
    y1        REAL NOT NULL,
    speed     REAL NOT NULL,
    PRIMARY KEY (stream_id, track_id, seq)
);
CREATE INDEX track_points_by_case ON track_points (case_id, stream_id, track_id);

-- The outbox also carries per-frame track assignments (topic 'tracks', keyed by stream_id);
-- 'events' rows are keyed by their case_id.
ALTER TABLE event_outbox ADD COLUMN topic TEXT NOT NULL DEFAULT 'events';
ALTER TABLE event_outbox ADD COLUMN message_key TEXT NOT NULL DEFAULT '';
