-- Several replicas on one database (PostgreSQL). SQLite runs one process
-- and writes none of these rows.

-- A replica alive renews its lease; one whose lease expired is ignored
-- everywhere (it died without cleaning up), and its rows are removed by
-- the others.
CREATE TABLE replicas (
    id          TEXT PRIMARY KEY,
    started_at  TEXT NOT NULL,
    renewed_at  TEXT NOT NULL
);

-- Live connections of each gateway, per replica: the fleet-wide view of
-- who is connected (status, isActive, the per-gateway cap).
CREATE TABLE gateway_connections (
    gateway_id   TEXT NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    replica_id   TEXT NOT NULL REFERENCES replicas (id) ON DELETE CASCADE,
    connections  INTEGER NOT NULL CHECK (connections > 0),
    PRIMARY KEY (gateway_id, replica_id)
);
CREATE INDEX gateway_connections_replica ON gateway_connections (replica_id);

-- Acknowledgements a replica's connections still owe for a deployment's
-- action: a gateway connected to several replicas is DEPLOYED when none
-- owes one.
CREATE TABLE ack_waits (
    api_id         TEXT NOT NULL,
    gateway_id     TEXT NOT NULL,
    deployment_id  TEXT NOT NULL,
    replica_id     TEXT NOT NULL REFERENCES replicas (id) ON DELETE CASCADE,
    PRIMARY KEY (api_id, gateway_id, replica_id)
);

-- The public keys of the replicas' own JWT signing keys: a token one
-- replica's key signed (platform-api token) is accepted by every replica.
CREATE TABLE local_signing_keys (
    kid         TEXT PRIMARY KEY,
    public_key  TEXT NOT NULL, -- PEM, PKIX
    added_at    TEXT NOT NULL
);

-- The key that seals secrets at rest, by id: a replica started with
-- another key file is refused, instead of sealing what the others cannot
-- open.
CREATE TABLE sealing_key (
    one     INTEGER PRIMARY KEY CHECK (one = 1),
    key_id  TEXT NOT NULL
);
