-- API consumers (contract §7): what second-generation gateways enforce for
-- the callers of an API.

-- Consumer events of changes made on one replica, for the others: the
-- change's notification names the row (a notification holds 8,000 bytes;
-- an event names every gateway it goes to). The body is sealed, since
-- some events carry values gateways need in plain. Rows are kept for a few
-- minutes only. Written on PostgreSQL only (SQLite has one process).
CREATE TABLE consumer_events (
    change_id   TEXT PRIMARY KEY,
    body        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX consumer_events_created ON consumer_events (created_at);

-- Applications: who calls APIs; they own keys (contract §7).
CREATE TABLE applications (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    project_id       TEXT REFERENCES projects (id) ON DELETE SET NULL,
    name             TEXT NOT NULL,
    display_name     TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (organization_id, name)
);
CREATE INDEX applications_org ON applications (organization_id, created_at);

-- API keys of one API: the SHA-256 (lower-case hex) of the trimmed value,
-- never the value. Deleting a row is revoking the key.
CREATE TABLE api_keys (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    api_id           TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    display_name     TEXT NOT NULL,
    hash             TEXT NOT NULL,
    masked           TEXT NOT NULL,
    application_id   TEXT REFERENCES applications (id) ON DELETE SET NULL,
    created_by       TEXT NOT NULL,  -- the creator's subject: gateways count keys per userId
    expires_at       TEXT,
    -- When its expiry was told to the gateways (apikey.revoked); cleared
    -- when a new expiresAt brings it back.
    expired_at       TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    last_rotated_at  TEXT,
    UNIQUE (api_id, name),
    UNIQUE (api_id, hash)
);
CREATE INDEX api_keys_org ON api_keys (organization_id, created_at);
CREATE INDEX api_keys_api ON api_keys (api_id, created_at);
CREATE INDEX api_keys_application ON api_keys (application_id);
CREATE INDEX api_keys_expiry ON api_keys (expires_at) WHERE expired_at IS NULL AND expires_at IS NOT NULL;
