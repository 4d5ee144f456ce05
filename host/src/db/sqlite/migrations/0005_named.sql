-- Named objects (wasi:blobstore, host/src/catalog/named.rs): an
-- organisation's containers, and the names in them. Each name points at
-- a location holding content by digest, and counts as a reference to it
-- (like a record): the location is tombstoned only when no record, no
-- name and no pending reference is left.
CREATE TABLE named_containers (
    org        TEXT    NOT NULL,
    space      TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (org, space)
) WITHOUT ROWID;

CREATE TABLE named_objects (
    org          TEXT    NOT NULL,
    space        TEXT    NOT NULL,
    object       TEXT    NOT NULL,
    sha256       TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    content_type TEXT    NOT NULL,
    backend      TEXT    NOT NULL,
    container    TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    parked       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (org, space, object)
) WITHOUT ROWID;

CREATE INDEX named_objects_location ON named_objects (backend, container, name);
-- coffer migrate and verify page through names by (organisation, location).
CREATE INDEX named_objects_by_org_location ON named_objects (org, backend, container, name);
