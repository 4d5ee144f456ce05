-- Namespaces organisations hold (see host/src/catalog/namespace.rs): the
-- first organisation to use a (backend, container, prefix) claims it, and
-- no other organisation may claim one that overlaps it. Never deleted.
CREATE TABLE claims (
    backend    TEXT    NOT NULL,
    container  TEXT    NOT NULL,
    prefix     TEXT    NOT NULL,
    org        TEXT    NOT NULL,
    claimed_at INTEGER NOT NULL,
    PRIMARY KEY (backend, container, prefix)
) WITHOUT ROWID;

CREATE INDEX claims_by_org ON claims (org);
