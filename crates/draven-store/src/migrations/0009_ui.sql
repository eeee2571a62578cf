-- Browser sessions of the web UI (SPEC K5, K12). The session id travels only in the cookie;
-- the database keeps its SHA-256, the session's CSRF token and an absolute expiry.
CREATE TABLE ui_sessions (
    id_hash       TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    user_id       TEXT NOT NULL REFERENCES users(id),
    csrf_token    TEXT NOT NULL,
    client_addr   TEXT NOT NULL DEFAULT '',
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX ui_sessions_user ON ui_sessions (tenant_id, user_id);
CREATE INDEX ui_sessions_expiry ON ui_sessions (expires_at);
