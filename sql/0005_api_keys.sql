-- API keys (CONTRACT.md §3a): bearer credentials for scripts, CI jobs and load tests.
-- Only the SHA-256 of a key is stored; `prefix` (its first characters) is what people
-- see to tell their keys apart. A key is never deleted, only revoked, so the audit trail
-- can always name it.
CREATE TABLE api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 128),
    prefix       text NOT NULL,
    key_hash     bytea NOT NULL UNIQUE CHECK (octet_length(key_hash) = 32),
    permissions  text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    CONSTRAINT api_keys_expire_after_creation CHECK (expires_at > created_at)
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id, created_at DESC, id DESC);
-- The revocation markers are rebuilt from the recently revoked keys (services/revocations.py).
CREATE INDEX api_keys_revoked_idx ON api_keys (revoked_at) WHERE revoked_at IS NOT NULL;

-- Which key acted, for writes made with one (no FK: the trail outlives what it names).
ALTER TABLE audit_logs ADD COLUMN api_key_id bigint;
