-- Function definitions (SPEC F1). The definition itself is a JSON document validated by
-- draven-functions; invocations, queues and the dead-letter queue live in memory (seed 002:
-- no durability across restarts), so nothing on the invocation path writes here.
CREATE TABLE functions (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    spec        TEXT NOT NULL,
    revision    BIGINT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);
