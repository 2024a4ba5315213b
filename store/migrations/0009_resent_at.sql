-- The performedAt the deployment was last sent with on a second-generation
-- gateway's connect (its initial state re-sends what it has not
-- acknowledged, newer than anything sent before). The next change to the
-- API is stamped after it, so that the gateway never ignores that change.
ALTER TABLE deployments ADD COLUMN resent_at TEXT;
