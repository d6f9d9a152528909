-- racklift schema, SQLite flavour. Times are milliseconds since the Unix epoch;
-- flags are 0/1 integers so both backends read them the same way.
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    boot_mac TEXT,
    macs TEXT NOT NULL DEFAULT '',
    bmc_driver TEXT NOT NULL,
    bmc_address TEXT,
    bmc_port INTEGER,
    bmc_username TEXT,
    bmc_password TEXT,
    bmc_verify_tls INTEGER NOT NULL DEFAULT 1,
    state TEXT NOT NULL,
    target TEXT,
    generation INTEGER NOT NULL,
    profile TEXT,
    role TEXT,
    last_error TEXT,
    maintenance INTEGER NOT NULL DEFAULT 0,
    maintenance_reason TEXT,
    power_state TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    state_changed_at INTEGER NOT NULL
);
CREATE INDEX nodes_state ON nodes (state, name);
CREATE INDEX nodes_profile ON nodes (profile, name);

CREATE TABLE ports (
    mac TEXT PRIMARY KEY,
    node_id TEXT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE
);
CREATE INDEX ports_node ON ports (node_id);

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    action TEXT,
    actor TEXT NOT NULL,
    reason TEXT,
    at INTEGER NOT NULL
);
CREATE INDEX events_node ON events (node_id, id);

CREATE TABLE steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id TEXT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    phase TEXT NOT NULL,
    stage TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    run_after INTEGER NOT NULL,
    deadline INTEGER NOT NULL,
    owner TEXT,
    lease_until INTEGER,
    outcome TEXT,
    last_error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX steps_one_active ON steps (node_id) WHERE status IN ('pending', 'running', 'waiting');
CREATE INDEX steps_due ON steps (status, run_after);

CREATE TABLE agent_tokens (
    hash TEXT PRIMARY KEY,
    node_id TEXT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    step_id INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX agent_tokens_node ON agent_tokens (node_id);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);

CREATE TABLE inventories (
    node_id TEXT PRIMARY KEY REFERENCES nodes (id) ON DELETE CASCADE,
    data TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
