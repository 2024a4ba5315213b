-- When a gateway was last heard from: the last activity of a connection of
-- it, written when that connection ends, so that its status does not fall
-- back to the (older) time its token was last checked.
ALTER TABLE gateways ADD COLUMN last_seen_at TEXT;
