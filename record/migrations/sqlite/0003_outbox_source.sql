-- Each outbox entry names the input partition whose message derived it, so that sinks sharing
-- one database each publish (and delete) only the entries of the partitions assigned to them:
-- no entry is published by two sinks, none deleted unpublished. Entries from before this
-- migration have partition -1 and are published by any sink.
ALTER TABLE event_outbox ADD COLUMN source_topic TEXT NOT NULL DEFAULT '';
ALTER TABLE event_outbox ADD COLUMN source_partition INTEGER NOT NULL DEFAULT -1;
