-- The OpenAPI document an API was imported from, or last updated with
-- (PUT /apis/{apiId}/openapi), kept exactly as sent; and the one each
-- revision was made with. An API made without one has no row: its document
-- is generated from its operations when asked for.
CREATE TABLE api_openapi_documents (
    api_id        TEXT PRIMARY KEY REFERENCES apis (id) ON DELETE CASCADE,
    content_type  TEXT NOT NULL,
    document      TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE api_revision_openapi_documents (
    revision_id   TEXT PRIMARY KEY REFERENCES api_revisions (id) ON DELETE CASCADE,
    content_type  TEXT NOT NULL,
    document      TEXT NOT NULL
);
