-- Operating rooms' cases: each case started and ended in a room through ingest (its
-- CaseStarted and CaseEnded events), and every camera that served it. A case configured on a
-- stream without a room has no rows here.
CREATE TABLE case_rooms (
    case_id      TEXT PRIMARY KEY,
    room_id      TEXT NOT NULL,
    opened_ns    BIGINT,
    closed_ns    BIGINT,
    close_detail TEXT NOT NULL
);

CREATE INDEX case_rooms_by_room ON case_rooms (room_id, opened_ns);

CREATE TABLE case_cameras (
    case_id   TEXT NOT NULL,
    stream_id TEXT NOT NULL,
    PRIMARY KEY (case_id, stream_id)
);
