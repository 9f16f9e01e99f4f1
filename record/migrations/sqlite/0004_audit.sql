-- Every deletion from the record (`orstream record delete`, `orstream record purge`) leaves a
-- row here, in the deletion's own transaction: who, when, what, how many rows. The table is
-- append-only: triggers refuse every UPDATE and DELETE, so no deletion, and no later
-- statement of the application, can remove the trace of one.
CREATE TABLE record_audit (
    position     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ns        INTEGER NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    case_id      TEXT NOT NULL,
    rows_deleted INTEGER NOT NULL,
    detail       TEXT NOT NULL
);

CREATE TRIGGER record_audit_rows_stay BEFORE UPDATE ON record_audit
BEGIN
    SELECT RAISE(ABORT, 'record_audit is append-only: its rows cannot be changed or deleted');
END;

CREATE TRIGGER record_audit_rows_stay_deleted BEFORE DELETE ON record_audit
BEGIN
    SELECT RAISE(ABORT, 'record_audit is append-only: its rows cannot be changed or deleted');
END;
