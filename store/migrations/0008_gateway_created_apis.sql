-- The gateway whose report or import created an API, so that what one
-- gateway may create is bounded (PLATFORM_MAX_GATEWAY_CREATED_APIS). Empty
-- for APIs created by users, and for those created before this column.
ALTER TABLE apis ADD COLUMN created_by_gateway TEXT NOT NULL DEFAULT '';
CREATE INDEX apis_created_by_gateway ON apis (created_by_gateway) WHERE created_by_gateway <> '';
