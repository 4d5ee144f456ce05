-- Coffer's first schema (releases before the location lifecycle): blobs in
-- chunk rows keyed by (container, name), and the catalog.
CREATE TABLE IF NOT EXISTS blobs (
    container  TEXT NOT NULL,
    name       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    PRIMARY KEY (container, name)
);
CREATE TABLE IF NOT EXISTS blob_chunks (
    container  TEXT NOT NULL,
    name       TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (container, name, seq)
);
CREATE TABLE IF NOT EXISTS objects (
    org          TEXT NOT NULL,
    sha256       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    backend      TEXT NOT NULL,
    container    TEXT NOT NULL,
    name         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (org, sha256)
);
CREATE INDEX IF NOT EXISTS objects_by_location ON objects (backend, container, name);
