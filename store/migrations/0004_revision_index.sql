-- Pruning revisions asks, for each one, whether a deployment runs it, and
-- the foreign key from deployments asks the same when one is deleted.
CREATE INDEX deployments_revision ON deployments (revision_id);
