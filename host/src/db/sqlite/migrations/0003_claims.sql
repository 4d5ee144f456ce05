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

-- Records from before claims: each organisation holds the places its
-- records already are (the name up to the digest it ends with, or the
-- whole name), the earliest record first, so upgrading locks no one out
-- of their own files. A place two organisations both used goes to the
-- one that used it first.
INSERT OR IGNORE INTO claims (backend, container, prefix, org, claimed_at)
SELECT backend, container, prefix, org, first_at FROM (
    SELECT backend, container, org, min(created_at) AS first_at,
           CASE WHEN length(name) >= 64 AND substr(name, -64) NOT GLOB '*[^0-9a-f]*'
                THEN substr(name, 1, length(name) - 64) ELSE name END AS prefix
    FROM objects GROUP BY backend, container, org, prefix
) ORDER BY first_at;
