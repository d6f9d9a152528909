-- DHCP leases: one row per address that was ever handed out, kept after
-- expiry so a returning client gets its old address back. The primary key
-- makes an address impossible to hand to two clients, whichever process asks;
-- the partial unique index gives a client at most one address per subnet.
CREATE TABLE dhcp_leases (
    ip TEXT PRIMARY KEY,
    subnet TEXT NOT NULL,
    -- NULL while the address is quarantined after a DECLINE.
    mac TEXT,
    -- offered | bound | released | declined
    state TEXT NOT NULL,
    hostname TEXT,
    -- Milliseconds since the Unix epoch; past it the address is free again.
    expires_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    -- The server identifier of the process that made the last change.
    server TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX dhcp_leases_client ON dhcp_leases (subnet, mac) WHERE mac IS NOT NULL;
-- Profile pool entries are reserved for the nodes they are assigned to.
CREATE INDEX allocations_value ON allocations (value);
