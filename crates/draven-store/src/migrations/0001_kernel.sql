-- Kernel: tenants, identity, grants, environments, secrets, audit, idempotency.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL (see the crate doc for conventions).

CREATE TABLE tenants (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    username       TEXT NOT NULL,
    display_name   TEXT NOT NULL,
    email          TEXT NOT NULL DEFAULT '',
    password_hash  TEXT NOT NULL DEFAULT '',
    system_admin   BIGINT NOT NULL DEFAULT 0,
    disabled       BIGINT NOT NULL DEFAULT 0,
    created_at     BIGINT NOT NULL,
    UNIQUE (tenant_id, username)
);

CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    user_id       TEXT NOT NULL REFERENCES users(id),
    name          TEXT NOT NULL,
    token_prefix  TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    scopes        TEXT NOT NULL DEFAULT '',
    expires_at    BIGINT,
    revoked_at    BIGINT,
    last_used_at  BIGINT,
    created_at    BIGINT NOT NULL
);
CREATE INDEX api_tokens_user ON api_tokens (tenant_id, user_id);

CREATE TABLE grants (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    user_id      TEXT NOT NULL REFERENCES users(id),
    role         TEXT NOT NULL,
    project      TEXT NOT NULL DEFAULT '',
    environment  TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    UNIQUE (user_id, role, project, environment)
);
CREATE INDEX grants_tenant ON grants (tenant_id);

CREATE TABLE environments (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    name         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    protected    BIGINT NOT NULL DEFAULT 0,
    revision     BIGINT NOT NULL DEFAULT 1,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE secrets (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    name         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    key_id       TEXT NOT NULL,
    wrapped_key  TEXT NOT NULL,
    ciphertext   TEXT NOT NULL,
    version      BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE audit_events (
    seq          BIGINT PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    at           BIGINT NOT NULL,
    tenant_id    TEXT,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    target       TEXT NOT NULL,
    ref_name     TEXT,
    outcome      TEXT NOT NULL,
    reason       TEXT,
    request_id   TEXT,
    client_addr  TEXT,
    detail       TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX audit_events_tenant ON audit_events (tenant_id, seq);

-- The head of the hash chain: one row, updated in the same transaction as each append. Taking
-- its row lock serialises appends on PostgreSQL; SQLite serialises writers anyway.
CREATE TABLE audit_head (
    id    BIGINT PRIMARY KEY,
    seq   BIGINT NOT NULL,
    hash  TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE idempotency_keys (
    tenant_id     TEXT NOT NULL,
    principal     TEXT NOT NULL,
    idem_key      TEXT NOT NULL,
    method        TEXT NOT NULL,
    path          TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status        BIGINT,
    content_type  TEXT,
    location      TEXT,
    body          TEXT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, principal, idem_key)
);
