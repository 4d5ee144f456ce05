-- Coffer's schema on PostgreSQL: the same concepts as the SQLite file
-- (host/src/db/sqlite/migrations), in one step. Names, digests and
-- organisations compare byte by byte (COLLATE "C"), as on SQLite and S3,
-- so listings page the same way whatever the database's locale.

-- The catalog: one row per organisation and content.
CREATE TABLE objects (
    org          TEXT COLLATE "C" NOT NULL,
    sha256       TEXT COLLATE "C" NOT NULL,
    size         BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    backend      TEXT COLLATE "C" NOT NULL,
    container    TEXT COLLATE "C" NOT NULL,
    name         TEXT COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (org, sha256)
);
CREATE INDEX objects_by_location ON objects (backend, container, name);

-- Puts in progress: a reference that is not committed yet. Bytes at a
-- location with a pending reference are never deleted.
CREATE TABLE pending (
    token       TEXT COLLATE "C" PRIMARY KEY,
    org         TEXT COLLATE "C" NOT NULL,
    sha256      TEXT COLLATE "C" NOT NULL,
    size        BIGINT NOT NULL,
    backend     TEXT COLLATE "C" NOT NULL,
    container   TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    touched_at  BIGINT NOT NULL
);
CREATE INDEX pending_by_location ON pending (backend, container, name);
CREATE INDEX pending_by_touch ON pending (touched_at);

-- Locations whose bytes are being deleted (held by token until
-- lease_until, in the database's clock).
CREATE TABLE tombstones (
    backend     TEXT COLLATE "C" NOT NULL,
    container   TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    token       TEXT COLLATE "C" NOT NULL,
    created_at  BIGINT NOT NULL,
    lease_until BIGINT NOT NULL,
    PRIMARY KEY (backend, container, name)
);
CREATE INDEX tombstones_by_token ON tombstones (token);

-- Every container a put has reserved a location in (for coffer gc).
CREATE TABLE containers (
    backend     TEXT COLLATE "C" NOT NULL,
    container   TEXT COLLATE "C" NOT NULL,
    first_seen  BIGINT NOT NULL,
    PRIMARY KEY (backend, container)
);

-- Namespaces organisations hold (host/src/catalog/namespace.rs).
CREATE TABLE claims (
    backend    TEXT COLLATE "C" NOT NULL,
    container  TEXT COLLATE "C" NOT NULL,
    prefix     TEXT COLLATE "C" NOT NULL,
    org        TEXT COLLATE "C" NOT NULL,
    claimed_at BIGINT NOT NULL,
    PRIMARY KEY (backend, container, prefix)
);
CREATE INDEX claims_by_org ON claims (org);

-- The database fallback's blobs: staged under an id a sequence never
-- hands out twice, written in chunk rows, published in one transaction.
CREATE TABLE blob_staging (
    blob_id     BIGSERIAL PRIMARY KEY,
    container   TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    started_at  BIGINT NOT NULL,
    touched_at  BIGINT NOT NULL
);
CREATE TABLE blob_data (
    blob_id     BIGINT NOT NULL,
    seq         INTEGER NOT NULL,
    data        BYTEA NOT NULL,
    PRIMARY KEY (blob_id, seq)
);
-- Stored out of line without compression: content is often compressed
-- already, and compressing it again only costs CPU.
ALTER TABLE blob_data ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE TABLE blobs (
    container   TEXT COLLATE "C" NOT NULL,
    name        TEXT COLLATE "C" NOT NULL,
    size        BIGINT NOT NULL,
    sha256      TEXT COLLATE "C" NOT NULL,
    blob_id     BIGINT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (container, name)
);
