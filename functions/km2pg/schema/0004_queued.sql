-- km2pg schema: when the reconciler (or km2pg backfill) last queued each export file.
--
-- A message it sent may still be waiting in the queue or being loaded; sending another one for
-- the same file would only make the loader skip it (the ledger loads a file once) but costs a
-- read of the whole file. The reconciler queues a file again only once its last message's
-- visibility timeout has passed. A new, small table: no existing table is rewritten.

CREATE TABLE km2pg.queued (
    export_key text PRIMARY KEY,
    queued_at  timestamptz NOT NULL
);

COMMENT ON TABLE km2pg.queued IS
    'When the reconciler or km2pg backfill last sent a load message for each export file (one '
    'row per file, updated on each send); a file is not sent again within the queue''s '
    'visibility timeout of its last send.';
