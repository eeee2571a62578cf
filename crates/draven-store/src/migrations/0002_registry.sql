-- Registry: artifacts, versions, their dependencies, bundles, publications; and the approval
-- requests shared by registry publications and deploys.

CREATE TABLE artifacts (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    artifact_key TEXT NOT NULL,
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    -- The labels as a sorted JSON array, so reading an artifact is one query; the table
    -- artifact_labels below is the index that filtering by label uses.
    labels       TEXT NOT NULL DEFAULT '[]',
    created_by   TEXT NOT NULL,
    revision     BIGINT NOT NULL DEFAULT 1,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    UNIQUE (tenant_id, artifact_key)
);
CREATE INDEX artifacts_tenant_kind ON artifacts (tenant_id, kind);

CREATE TABLE artifact_labels (
    tenant_id    TEXT NOT NULL,
    artifact_id  TEXT NOT NULL REFERENCES artifacts(id),
    label        TEXT NOT NULL,
    PRIMARY KEY (artifact_id, label)
);
CREATE INDEX artifact_labels_tenant ON artifact_labels (tenant_id, label);

CREATE TABLE artifact_versions (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    artifact_id   TEXT NOT NULL REFERENCES artifacts(id),
    number        BIGINT NOT NULL,
    state         TEXT NOT NULL,
    version_tag   TEXT NOT NULL DEFAULT '',
    sha256        TEXT NOT NULL,
    size          BIGINT NOT NULL,
    payload_key   TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    findings      TEXT NOT NULL,
    errors        BIGINT NOT NULL DEFAULT 0,
    revision      BIGINT NOT NULL DEFAULT 1,
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    published_at  BIGINT,
    UNIQUE (artifact_id, number)
);
CREATE INDEX artifact_versions_state ON artifact_versions (tenant_id, state);

-- What a version defines (process/decision/form ids) and what it needs from others.
CREATE TABLE version_provides (
    tenant_id   TEXT NOT NULL,
    version_id  TEXT NOT NULL REFERENCES artifact_versions(id),
    ref_kind    TEXT NOT NULL,
    ref_id      TEXT NOT NULL,
    PRIMARY KEY (version_id, ref_kind, ref_id)
);
CREATE INDEX version_provides_lookup ON version_provides (tenant_id, ref_kind, ref_id);

CREATE TABLE version_requires (
    tenant_id     TEXT NOT NULL,
    version_id    TEXT NOT NULL REFERENCES artifact_versions(id),
    ref_kind      TEXT NOT NULL,
    ref_id        TEXT NOT NULL,
    from_element  TEXT NOT NULL,
    declared      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (version_id, ref_kind, ref_id, from_element)
);

CREATE TABLE bundles (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    sha256      TEXT NOT NULL,
    size        BIGINT NOT NULL,
    object_key  TEXT NOT NULL,
    manifest    TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (tenant_id, sha256)
);

CREATE TABLE bundle_items (
    bundle_id   TEXT NOT NULL REFERENCES bundles(id),
    version_id  TEXT NOT NULL REFERENCES artifact_versions(id),
    PRIMARY KEY (bundle_id, version_id)
);

CREATE TABLE publications (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    environment   TEXT NOT NULL,
    bundle_id     TEXT NOT NULL REFERENCES bundles(id),
    state         TEXT NOT NULL,
    requested_by  TEXT NOT NULL,
    approval_id   TEXT,
    created_at    BIGINT NOT NULL,
    live_at       BIGINT,
    ended_at      BIGINT
);
CREATE INDEX publications_env ON publications (tenant_id, environment, created_at);

CREATE TABLE approval_requests (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    subject_kind  TEXT NOT NULL,
    subject_id    TEXT NOT NULL,
    project       TEXT NOT NULL DEFAULT '',
    environment   TEXT NOT NULL DEFAULT '',
    requested_by  TEXT NOT NULL,
    required      BIGINT NOT NULL,
    state         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    decided_at    BIGINT
);
CREATE INDEX approval_requests_state ON approval_requests (tenant_id, state);

CREATE TABLE approval_votes (
    request_id  TEXT NOT NULL REFERENCES approval_requests(id),
    user_id     TEXT NOT NULL,
    username    TEXT NOT NULL,
    verdict     TEXT NOT NULL,
    comment     TEXT NOT NULL DEFAULT '',
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (request_id, user_id)
);
