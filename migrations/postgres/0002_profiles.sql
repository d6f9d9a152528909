-- Profile selection: each node's hostname and addresses, quota counters, and
-- the pool entries of every profile (free when node_id is NULL).
ALTER TABLE nodes ADD COLUMN hostname TEXT;
ALTER TABLE nodes ADD COLUMN addresses TEXT NOT NULL DEFAULT '{}';

CREATE TABLE profile_quota (
    profile TEXT PRIMARY KEY,
    used BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE allocations (
    profile TEXT NOT NULL,
    pool TEXT NOT NULL,
    value TEXT NOT NULL,
    seq BIGINT NOT NULL,
    node_id TEXT,
    -- The $$ captures of the machine that last held the entry ("k=v;k=v"):
    -- the same machine enrolled again gets the same entry back.
    cmdb_key TEXT,
    PRIMARY KEY (profile, pool, value)
);
CREATE INDEX allocations_free ON allocations (profile, pool, node_id, seq);
CREATE INDEX allocations_node ON allocations (node_id);

-- Which profile's quota each node holds (one row per node).
CREATE TABLE profile_members (
    node_id TEXT PRIMARY KEY REFERENCES nodes (id) ON DELETE CASCADE,
    profile TEXT NOT NULL
);
