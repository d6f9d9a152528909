-- Inventory facts (the eDeploy flattening kept beside the raw document) and
-- discovery tokens: minted for a MAC no node has, good for one enrolment.
ALTER TABLE inventories ADD COLUMN facts TEXT;

CREATE TABLE discovery_tokens (
    hash TEXT PRIMARY KEY,
    mac TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    node_id TEXT REFERENCES nodes (id) ON DELETE CASCADE,
    used_at INTEGER
);
CREATE INDEX discovery_tokens_mac ON discovery_tokens (mac);
