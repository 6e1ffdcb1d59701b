-- Accounts: a tenant's storage quota, and what the users admin pages through.

-- NULL: the hub's default (REMOTEGPU_TENANT_QUOTA_BYTES), so changing the default reaches
-- every tenant that was never given a quota of its own.
ALTER TABLE tenants
    ADD COLUMN storage_quota_bytes bigint CHECK (storage_quota_bytes >= 0);

-- The users list is newest first (stable paging), like every other admin list.
CREATE INDEX users_created_at_idx ON users (created_at DESC, id DESC);
