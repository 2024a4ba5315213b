-- Progressive rollouts: a revision deployed to gateways in waves, driven by
-- exactly one replica (the lease), resumed where it was after a restart.

CREATE TABLE rollouts (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    api_id           TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    -- ROLLOUT deploys revision_id; ROLLBACK deploys to each target the
    -- revision it ran before rollback_of (its own, in rollout_targets).
    kind             TEXT NOT NULL CHECK (kind IN ('ROLLOUT', 'ROLLBACK')),
    rollback_of      TEXT,
    revision_id      TEXT,
    status           TEXT NOT NULL CHECK (status IN ('RUNNING', 'PAUSED', 'HALTED', 'COMPLETED', 'ABORTED', 'ROLLED_BACK')),
    reason           TEXT,
    waves            TEXT NOT NULL, -- JSON array of cumulative percentages, one per wave that has gateways
    wave_timeout_ms  INTEGER NOT NULL,
    pause_ms         INTEGER NOT NULL,
    max_failures     INTEGER NOT NULL,
    -- The wave being worked (1-based; 0 before the first) and how far:
    -- 'deploying' (begun: its deploy may or may not have committed),
    -- 'deployed', 'settled'.
    wave             INTEGER NOT NULL DEFAULT 0,
    phase            TEXT NOT NULL DEFAULT 'settled' CHECK (phase IN ('deploying', 'deployed', 'settled')),
    wave_started_at  TEXT,
    wave_deployed_at TEXT,
    wave_settled_at  TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    finished_at      TEXT,
    -- The replica driving it, until lease_until (SQLite: the one process).
    lease_owner      TEXT,
    lease_until      TEXT
);
-- One rollout at a time per API.
CREATE UNIQUE INDEX rollouts_active ON rollouts (api_id) WHERE status IN ('RUNNING', 'PAUSED');
CREATE INDEX rollouts_api ON rollouts (api_id, created_at);
CREATE INDEX rollouts_running ON rollouts (status) WHERE status = 'RUNNING';

-- The gateways of a rollout, each in one wave. previous_* is what the
-- gateway ran when its wave began (what a rollback deploys again; no
-- previous revision: the rollback undeploys). A wave's deploy of a target
-- is done once the gateway's deployment_id is no longer
-- previous_deployment_id: that is how a resumed rollout tells what was
-- deployed before it stopped from what was not.
CREATE TABLE rollout_targets (
    rollout_id              TEXT NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    position                INTEGER NOT NULL,
    gateway_id              TEXT NOT NULL,
    wave                    INTEGER NOT NULL,
    vhost                   TEXT NOT NULL,
    display_on_devportal    BOOLEAN NOT NULL DEFAULT FALSE,
    revision_id             TEXT, -- to deploy; NULL: undeploy (a rollback)
    previous_revision_id    TEXT,
    previous_vhost          TEXT,
    previous_deployment_id  TEXT,
    deployment_id           TEXT,
    outcome                 TEXT CHECK (outcome IN ('DEPLOYED', 'DELIVERED', 'UNDEPLOYED', 'FAILED')),
    error_code              TEXT,
    sent_at                 TEXT,
    settled_at              TEXT,
    PRIMARY KEY (rollout_id, gateway_id)
);
CREATE INDEX rollout_targets_wave ON rollout_targets (rollout_id, wave, position);
CREATE INDEX rollout_targets_previous ON rollout_targets (previous_revision_id);
CREATE INDEX rollout_targets_revision ON rollout_targets (revision_id);
