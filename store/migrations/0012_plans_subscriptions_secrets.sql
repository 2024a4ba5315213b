-- API consumers (contract §7): subscription plans, subscriptions, secrets,
-- and the secrets each API definition and each revision refers to.

-- A rate tier. request_count and time_unit are both set or both NULL (no
-- limit).
CREATE TABLE subscription_plans (
    id                   TEXT PRIMARY KEY,
    organization_id      TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name                 TEXT NOT NULL,
    display_name         TEXT NOT NULL DEFAULT '',
    request_count        INTEGER,
    time_unit            TEXT CHECK (time_unit IN ('minute', 'hour', 'day', 'month')),
    stop_on_quota_reach  BOOLEAN NOT NULL DEFAULT TRUE,
    expires_at           TEXT,
    status               TEXT NOT NULL CHECK (status IN ('ACTIVE', 'INACTIVE')),
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    CONSTRAINT subscription_plans_org_name UNIQUE (organization_id, name),
    CHECK ((request_count IS NULL) = (time_unit IS NULL))
);
CREATE INDEX subscription_plans_org_created ON subscription_plans (organization_id, created_at);

-- An application (or another subscriber) subscribed to an API under a plan.
-- token is sealed (store/seal.go): gateways receive it in plain. A plan in
-- use cannot be deleted (the foreign key); application_id is '' when the
-- subscriber is not an application of ours.
CREATE TABLE subscriptions (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    api_id           TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    application_id   TEXT NOT NULL DEFAULT '',
    subscriber_id    TEXT NOT NULL DEFAULT '',
    plan_id          TEXT REFERENCES subscription_plans (id),
    token            TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('ACTIVE', 'INACTIVE')),
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX subscriptions_org_created ON subscriptions (organization_id, created_at);
CREATE INDEX subscriptions_api ON subscriptions (api_id, created_at);
CREATE INDEX subscriptions_plan ON subscriptions (plan_id) WHERE plan_id IS NOT NULL;
-- One active subscription per (API, application).
CREATE UNIQUE INDEX subscriptions_one_active ON subscriptions (api_id, application_id)
    WHERE status = 'ACTIVE' AND application_id <> '';

-- A value gateways need at run time. value is sealed; hash tells versions
-- apart without showing the value (a digest of the sealed form, made when
-- the value is written, so that it changes with every new value and with
-- nothing else).
CREATE TABLE secrets (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    value            TEXT NOT NULL,
    hash             TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    CONSTRAINT secrets_org_name UNIQUE (organization_id, name)
);
CREATE INDEX secrets_org_created ON secrets (organization_id, created_at);

-- The secrets ({{ secret "name" }}) an API's current definition refers to,
-- and those each revision refers to: what a gateway may pull is what the
-- revisions deployed to it refer to.
CREATE TABLE api_secret_refs (
    api_id  TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    PRIMARY KEY (api_id, name)
);
CREATE INDEX api_secret_refs_name ON api_secret_refs (name);
CREATE TABLE revision_secret_refs (
    revision_id  TEXT NOT NULL REFERENCES api_revisions (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    PRIMARY KEY (revision_id, name)
);
CREATE INDEX revision_secret_refs_name ON revision_secret_refs (name);
