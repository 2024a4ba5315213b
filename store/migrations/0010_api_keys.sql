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
