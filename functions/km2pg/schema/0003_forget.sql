-- km2pg schema: forgetting a person (privacy requests; km2pg forget).
--
-- The identities forgotten, kept as the SHA-256 of each name's UTF-8 bytes, never the name:
-- loads drop the lines of these identities, so a reload of old files cannot bring them back,
-- and count them in the ledger's new column "suppressed".

CREATE TABLE km2pg.suppressed_identities (
    name_sha256 bytea PRIMARY KEY CHECK (length(name_sha256) = 32),
    since       timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE km2pg.suppressed_identities IS
    'Identities forgotten by km2pg forget: sha256 of the name (UTF-8), never the name. Their '
    'lines in any later load are dropped and counted in files.suppressed.';

-- A constant default: PostgreSQL adds the column without rewriting the ledger.
ALTER TABLE km2pg.files ADD COLUMN suppressed bigint NOT NULL DEFAULT 0;

COMMENT ON COLUMN km2pg.files.suppressed IS
    'Lines not loaded because their identity (_p or _p2) was forgotten; not counted as rejects.';
