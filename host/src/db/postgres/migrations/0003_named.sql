-- Named objects (wasi:blobstore, host/src/catalog/named.rs); the same as
-- SQLite's 0005: an organisation's containers, and the names in them.
-- Each name points at a location holding content by digest, and counts as
-- a reference to it (like a record): the location is tombstoned only when
-- no record, no name and no pending reference is left.
CREATE TABLE named_containers (
    org        TEXT COLLATE "C" NOT NULL,
    space      TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (org, space)
);

CREATE TABLE named_objects (
    org          TEXT COLLATE "C" NOT NULL,
    space        TEXT COLLATE "C" NOT NULL,
    object       TEXT COLLATE "C" NOT NULL,
    sha256       TEXT COLLATE "C" NOT NULL,
    size         BIGINT NOT NULL,
    content_type TEXT NOT NULL,
    backend      TEXT COLLATE "C" NOT NULL,
    container    TEXT COLLATE "C" NOT NULL,
    name         TEXT COLLATE "C" NOT NULL,
    created_at   BIGINT NOT NULL,
    parked       BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (org, space, object)
);
CREATE INDEX named_objects_by_location ON named_objects (backend, container, name);
-- coffer migrate and verify page through names by (organisation, location).
CREATE INDEX named_objects_by_org_location ON named_objects (org, backend, container, name);
