-- Immutable API revisions and the revision each gateway runs.

-- A revision is a frozen copy of an API definition (the JSON of store.API,
-- children included). Rows are only ever inserted, never updated.
CREATE TABLE api_revisions (
    id          TEXT PRIMARY KEY,
    api_id      TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    number      INTEGER NOT NULL,
    definition  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (api_id, number)
);

-- One row per (API, gateway): each gateway runs exactly one revision of an
-- API. This is the desired state a reconnecting gateway is brought to.
CREATE TABLE deployments (
    api_id                TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    gateway_id            TEXT NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    revision_id           TEXT NOT NULL REFERENCES api_revisions (id),
    vhost                 TEXT NOT NULL,
    display_on_devportal  BOOLEAN NOT NULL DEFAULT FALSE,
    status                TEXT NOT NULL CHECK (status IN ('PENDING', 'DELIVERED')),
    deployed_at           TEXT NOT NULL,
    delivered_at          TEXT,
    fetched_at            TEXT,
    PRIMARY KEY (api_id, gateway_id)
);
CREATE INDEX deployments_gateway ON deployments (gateway_id, deployed_at);
