-- Second-generation gateways (contract §6): deployment ids, acknowledged
-- statuses, tombstones of undeployments and deletions, and manifests.
--
-- SQLite cannot change a CHECK constraint in place, so the deployments
-- table is rebuilt. Nothing references it.
CREATE TABLE deployments_new (
    api_id                TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    gateway_id            TEXT NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    -- What gateways see in events; new for each deploy of the API to the
    -- gateway, kept by an undeploy.
    deployment_id         TEXT NOT NULL,
    revision_id           TEXT NOT NULL REFERENCES api_revisions (id),
    vhost                 TEXT NOT NULL,
    display_on_devportal  BOOLEAN NOT NULL DEFAULT FALSE,
    -- 'undeployed' rows are tombstones: the gateway must learn of the
    -- undeployment even when it was away, until it acknowledges it or the
    -- retention time passes.
    state                 TEXT NOT NULL DEFAULT 'deployed' CHECK (state IN ('deployed', 'undeployed')),
    status                TEXT NOT NULL CHECK (status IN ('PENDING', 'DELIVERED', 'DEPLOYING', 'DEPLOYED',
                              'FAILED', 'UNDEPLOYING', 'UNDEPLOYED')),
    error_code            TEXT,
    deployed_at           TEXT NOT NULL, -- when this deployment was made
    performed_at          TEXT NOT NULL, -- when its last action (deploy or undeploy) was made
    sent_at               TEXT,          -- when that action last went to a second-generation connection
    delivered_at          TEXT,
    acked_at              TEXT,
    fetched_at            TEXT,
    PRIMARY KEY (api_id, gateway_id)
);
INSERT INTO deployments_new (api_id, gateway_id, deployment_id, revision_id, vhost, display_on_devportal,
    status, deployed_at, performed_at, delivered_at, fetched_at)
    SELECT api_id, gateway_id, '', revision_id, vhost, display_on_devportal,
    status, deployed_at, deployed_at, delivered_at, fetched_at FROM deployments;
DROP TABLE deployments;
ALTER TABLE deployments_new RENAME TO deployments;
CREATE INDEX deployments_gateway ON deployments (gateway_id, performed_at);
CREATE INDEX deployments_revision ON deployments (revision_id);
-- The acknowledgement timeout looks only at what waits for one.
CREATE INDEX deployments_waiting ON deployments (sent_at) WHERE status IN ('DEPLOYING', 'UNDEPLOYING');

-- Tombstones of the deployments of deleted APIs (the API row is gone, so
-- no foreign key to it), kept for the gateways that ran them.
CREATE TABLE deleted_deployments (
    gateway_id     TEXT NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    api_id         TEXT NOT NULL,
    deployment_id  TEXT NOT NULL,
    vhost          TEXT NOT NULL,
    state          TEXT NOT NULL, -- of the deployment when its API was deleted
    deleted_at     TEXT NOT NULL,
    delivered_at   TEXT,
    PRIMARY KEY (gateway_id, api_id)
);
CREATE INDEX deleted_deployments_at ON deleted_deployments (deleted_at);

-- What a second-generation gateway last reported about itself.
CREATE TABLE gateway_manifests (
    gateway_id          TEXT PRIMARY KEY REFERENCES gateways (id) ON DELETE CASCADE,
    version             TEXT NOT NULL,
    functionality_type  TEXT NOT NULL,
    policies            TEXT NOT NULL, -- JSON array of "name@version"
    reported_at         TEXT NOT NULL
);

-- The handle of an API (RestApi metadata.name): unique in the
-- organization. Empty until set (a migration hook sets existing ones).
ALTER TABLE apis ADD COLUMN handle TEXT NOT NULL DEFAULT '';
