-- A page of APIs is found in the index alone: the page's ids and update
-- times at any offset without reading the rows it skips, and the total
-- without reading any.
DROP INDEX apis_org_created;
DROP INDEX apis_project_created;
CREATE INDEX apis_org_page ON apis (organization_id, created_at, id, updated_at);
CREATE INDEX apis_project_page ON apis (organization_id, project_id, created_at, id, updated_at);
