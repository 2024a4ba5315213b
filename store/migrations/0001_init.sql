-- Organizations, projects, gateways, gateway tokens and API definitions.
-- Timestamps are TEXT in the fixed-width UTC layout of store.timeLayout.

CREATE TABLE organizations (
    id          TEXT PRIMARY KEY,
    handle      TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    region      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE projects (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (organization_id, name)
);
CREATE INDEX projects_org_created ON projects (organization_id, created_at);

CREATE TABLE gateways (
    id                  TEXT PRIMARY KEY,
    organization_id     TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name                TEXT NOT NULL,
    display_name        TEXT NOT NULL,
    description         TEXT NOT NULL DEFAULT '',
    vhost               TEXT NOT NULL DEFAULT '',
    is_critical         BOOLEAN NOT NULL DEFAULT FALSE,
    functionality_type  TEXT NOT NULL DEFAULT 'regular'
                        CHECK (functionality_type IN ('regular', 'ai', 'event')),
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    UNIQUE (organization_id, name)
);
CREATE INDEX gateways_org_created ON gateways (organization_id, created_at);

-- A token is active while active_slot is 1 or 2. UNIQUE (gateway_id,
-- active_slot) caps a gateway at two active tokens in the schema itself:
-- revoked tokens hold NULL, and NULLs never clash in a UNIQUE constraint.
CREATE TABLE gateway_tokens (
    id            TEXT PRIMARY KEY,
    gateway_id    TEXT NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    salt          BYTEA NOT NULL,   -- BYTEA: PostgreSQL's name; SQLite stores the bytes as given
    hash          BYTEA NOT NULL,
    active_slot   INTEGER CHECK (active_slot IN (1, 2)),
    created_at    TEXT NOT NULL,
    revoked_at    TEXT,
    last_used_at  TEXT,
    UNIQUE (gateway_id, active_slot)
);
CREATE INDEX gateway_tokens_gateway ON gateway_tokens (gateway_id, created_at);

-- An API definition. Columns hold what is queried or constrained; the leaf
-- settings (mtls, security, cors, rate limiting) are one JSON document.
CREATE TABLE apis (
    id                  TEXT PRIMARY KEY,
    organization_id     TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    project_id          TEXT NOT NULL REFERENCES projects (id),
    name                TEXT NOT NULL,
    display_name        TEXT NOT NULL DEFAULT '',
    description         TEXT NOT NULL DEFAULT '',
    context             TEXT NOT NULL,
    version             TEXT NOT NULL,
    provider            TEXT NOT NULL,
    lifecycle_status    TEXT NOT NULL,
    type                TEXT NOT NULL,
    transport           TEXT NOT NULL,
    has_thumbnail       BOOLEAN NOT NULL DEFAULT FALSE,
    is_default_version  BOOLEAN NOT NULL DEFAULT FALSE,
    is_revision         BOOLEAN NOT NULL DEFAULT FALSE,
    revisioned_api_id   TEXT NOT NULL DEFAULT '',
    revision_id         INTEGER NOT NULL DEFAULT 0,
    settings            TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    UNIQUE (project_id, name, version),
    UNIQUE (organization_id, context, version)
);
CREATE INDEX apis_org_created ON apis (organization_id, created_at);
CREATE INDEX apis_project_created ON apis (project_id, created_at);

CREATE TABLE api_backend_services (
    api_id    TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    position  INTEGER NOT NULL,
    name      TEXT NOT NULL,
    config    TEXT NOT NULL,
    PRIMARY KEY (api_id, position),
    UNIQUE (api_id, name)
);

CREATE TABLE api_operations (
    api_id    TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    position  INTEGER NOT NULL,
    method    TEXT NOT NULL
              CHECK (method IN ('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS')),
    path      TEXT NOT NULL CHECK (path LIKE '/%'),
    config    TEXT NOT NULL,
    PRIMARY KEY (api_id, position)
);
