-- The location lifecycle (README "Guarantees"): pending references of puts
-- in progress, tombstones of locations whose bytes are being deleted, and
-- blobs staged in short transactions under an id that is never reused.

-- Puts in progress: a reference that is not committed yet. Bytes at a
-- location with a pending reference are never deleted.
CREATE TABLE pending (
    token       TEXT PRIMARY KEY,
    org         TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    backend     TEXT NOT NULL,
    container   TEXT NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    touched_at  INTEGER NOT NULL
);
CREATE INDEX pending_by_location ON pending (backend, container, name);
CREATE INDEX pending_by_touch ON pending (touched_at);

-- Locations whose bytes are being deleted. While one exists, no put may
-- reserve the location; its holder (token) clears it once the bytes are
-- gone, and another may take it over only after lease_until.
CREATE TABLE tombstones (
    backend     TEXT NOT NULL,
    container   TEXT NOT NULL,
    name        TEXT NOT NULL,
    token       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    lease_until INTEGER NOT NULL,
    PRIMARY KEY (backend, container, name)
);

-- Every container a put has reserved a location in, kept so that
-- `coffer gc` scans it even when the only put there crashed.
CREATE TABLE containers (
    backend     TEXT NOT NULL,
    container   TEXT NOT NULL,
    first_seen  INTEGER NOT NULL,
    PRIMARY KEY (backend, container)
);
INSERT OR IGNORE INTO containers (backend, container, first_seen)
    SELECT DISTINCT backend, container, min(created_at) FROM objects GROUP BY backend, container;

-- Blob bytes move to rows keyed by a blob id. A database put stages its
-- rows under a fresh id in short transactions, then publishes the blob in
-- one; AUTOINCREMENT never hands out an id twice, so a reader holding an
-- old id can never see another blob's rows.
CREATE TABLE blob_staging (
    blob_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    container   TEXT NOT NULL,
    name        TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    touched_at  INTEGER NOT NULL
);
CREATE TABLE blob_data (
    blob_id     INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    data        BLOB NOT NULL,
    PRIMARY KEY (blob_id, seq)
);
ALTER TABLE blobs RENAME TO blobs_v1;
CREATE TABLE blobs (
    container   TEXT NOT NULL,
    name        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    blob_id     INTEGER NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (container, name)
);
INSERT INTO blobs (container, name, size, sha256, blob_id, created_at)
    SELECT container, name, size, sha256, rowid, CAST(strftime('%s', 'now') AS INTEGER) FROM blobs_v1;
INSERT INTO blob_data (blob_id, seq, data)
    SELECT b.blob_id, c.seq, c.data FROM blob_chunks c JOIN blobs b ON b.container = c.container AND b.name = c.name;
DROP TABLE blob_chunks;
DROP TABLE blobs_v1;
-- New ids start above every migrated one.
INSERT INTO sqlite_sequence (name, seq) SELECT 'blob_staging', coalesce(max(blob_id), 0) FROM blobs;
