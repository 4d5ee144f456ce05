-- Moving objects between backends and adopting existing stores
-- (`coffer migrate`, `coffer import`); the same as SQLite's 0004.
--
-- An object stored in the database because S3 was unavailable when it
-- was put (policy setting park-when-unavailable): `coffer migrate` (or
-- `coffer drain`) moves it to S3 later.
ALTER TABLE objects ADD COLUMN parked BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX objects_parked ON objects (org, sha256) WHERE parked;

-- Namespaces adopted in place (`coffer import rt`): another system's
-- bucket whose objects became records without being copied. Coffer never
-- deletes bytes there (neither on delete nor in gc): they are not its own.
CREATE TABLE adopted (
    backend    TEXT COLLATE "C" NOT NULL,
    container  TEXT COLLATE "C" NOT NULL,
    prefix     TEXT COLLATE "C" NOT NULL,
    org        TEXT COLLATE "C" NOT NULL,
    adopted_at BIGINT NOT NULL,
    PRIMARY KEY (backend, container, prefix)
);
