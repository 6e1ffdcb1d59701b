-- The lists of issue 12 in their default order, without sorting whole tables: every
-- tenant's jobs newest first (staff), and one tenant's alerts most recently seen first.
CREATE INDEX jobs_created_idx ON jobs (created_at DESC, id DESC);
CREATE INDEX alerts_tenant_seen_idx ON alerts (tenant_id, last_seen_at DESC, id DESC);
