-- Every deletion from the record (`orstream record delete`, `orstream record purge`) leaves a
-- row here, in the deletion's own transaction: who, when, what, how many rows. The table is
-- append-only: a trigger refuses every UPDATE, DELETE and TRUNCATE, so no deletion, and no
-- later statement of the application, can remove the trace of one.
CREATE TABLE record_audit (
    position     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ns        BIGINT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    case_id      TEXT NOT NULL,
    rows_deleted BIGINT NOT NULL,
    detail       TEXT NOT NULL
);

CREATE FUNCTION record_audit_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'record_audit is append-only: its rows cannot be changed or deleted';
END
$$;

CREATE TRIGGER record_audit_rows_stay BEFORE UPDATE OR DELETE ON record_audit
    FOR EACH ROW EXECUTE FUNCTION record_audit_refuse();
CREATE TRIGGER record_audit_table_stays BEFORE TRUNCATE ON record_audit
    FOR EACH STATEMENT EXECUTE FUNCTION record_audit_refuse();
