-- Moving objects between backends and adopting existing stores
-- (`coffer migrate`, `coffer import`).
--
-- An object stored in the database because S3 was unavailable when it
-- was put (policy setting park-when-unavailable): `coffer migrate` (or
-- `coffer drain`) moves it to S3 later.
ALTER TABLE objects ADD COLUMN parked INTEGER NOT NULL DEFAULT 0;
CREATE INDEX objects_parked ON objects (org, sha256) WHERE parked = 1;

-- Namespaces adopted in place (`coffer import rt`): another system's
-- bucket whose objects became records without being copied. Coffer never
-- deletes bytes there (neither on delete nor in gc): they are not its own.
CREATE TABLE adopted (
    backend    TEXT    NOT NULL,
    container  TEXT    NOT NULL,
    prefix     TEXT    NOT NULL,
    org        TEXT    NOT NULL,
    adopted_at INTEGER NOT NULL,
    PRIMARY KEY (backend, container, prefix)
) WITHOUT ROWID;
