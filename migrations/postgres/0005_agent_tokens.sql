-- Agent tokens: one per step, handed out by the boot script until the agent
-- first uses it (its text is kept sealed until then, never after), replaced
-- when racklift boots the machine again for the step. Of the tokens of the
-- earlier shape (one per boot-script fetch) the newest of each step keeps
-- working for it and is never handed out again.
CREATE TABLE agent_tokens_v2 (
    step_id BIGINT PRIMARY KEY,
    node_id TEXT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    hash TEXT NOT NULL UNIQUE,
    sealed TEXT,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at BIGINT
);
INSERT INTO agent_tokens_v2 (step_id, node_id, hash, sealed, expires_at, created_at, used_at)
    SELECT t.step_id, t.node_id, t.hash, NULL, t.expires_at, t.created_at, t.created_at
    FROM agent_tokens t
    WHERE t.created_at = (SELECT MAX(u.created_at) FROM agent_tokens u WHERE u.step_id = t.step_id)
      AND t.hash = (SELECT MIN(v.hash) FROM agent_tokens v WHERE v.step_id = t.step_id AND v.created_at = t.created_at);
DROP TABLE agent_tokens;
ALTER TABLE agent_tokens_v2 RENAME TO agent_tokens;
CREATE INDEX agent_tokens_node ON agent_tokens (node_id);

-- Discovery tokens likewise: the same token for a MAC until first used.
ALTER TABLE discovery_tokens ADD COLUMN sealed TEXT;

-- Repeated events (a machine asking for its boot script every 30 s) are one
-- row with a count and the time of the latest.
ALTER TABLE events ADD COLUMN repeats BIGINT NOT NULL DEFAULT 1;
ALTER TABLE events ADD COLUMN last_at BIGINT;
