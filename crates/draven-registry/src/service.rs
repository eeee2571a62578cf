//! The registry's operations over the database and object storage: versions (payload written
//! first, row committed second, orphans removed), releases (closure, validation as a whole,
//! deterministic bundle, atomic publication of drafts), dependency graphs and orphan cleanup.

use crate::bundle::{
    build_tar, item_path, Dependency, Manifest, ManifestItem, RefEntry, ResolvedBy,
};
use crate::release::{cycles, resolve, unsatisfied, Node};
use crate::validate::{validate, Finding, Kind, Report, Severity};
use bytes::Bytes;
use draven_blob::{sha256_hex, BlobError, Blobs};
use draven_core::{Error, ErrorCode, FieldError, Slug};
use draven_store::audit::Actor;
use draven_store::registry::{Content, Version, DEPRECATED, DRAFT};
use draven_store::registry_release::{Bundle, Member};
use draven_store::{Db, StoreError};
use std::collections::BTreeMap;

/// Orphaned payloads younger than this are left alone: their row may not be committed yet.
pub const ORPHAN_MIN_AGE_MS: i64 = 60 * 60 * 1000;
/// Most labels per artifact.
pub const MAX_LABELS: usize = 32;
/// Most versions per release request (before the closure adds dependencies).
pub const MAX_RELEASE_ITEMS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Domain(#[from] Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("object storage: {0}")]
    Blob(#[from] BlobError),
}

impl From<RegistryError> for Error {
    fn from(e: RegistryError) -> Error {
        match e {
            RegistryError::Domain(d) => d,
            RegistryError::Store(s) => s.into(),
            RegistryError::Blob(b) => {
                tracing::error!(error = %b, "object storage failure");
                Error::new(
                    ErrorCode::Unavailable,
                    "object storage failed; nothing was changed, retry later",
                )
            }
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// An artifact to create, as the API received it.
#[derive(Clone, Debug, Default)]
pub struct ArtifactInput {
    pub key: String,
    pub kind: String,
    pub name: String,
    pub description: String,
    pub labels: Vec<String>,
}

/// One node of a dependency graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphNode {
    pub key: String,
    pub kind: String,
    pub version: i64,
    pub state: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Graph {
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<crate::release::Edge>,
    pub missing: Vec<crate::release::Missing>,
    pub cycles: Vec<Vec<String>>,
}

pub fn findings_json(findings: &[Finding]) -> String {
    let list: Vec<serde_json::Value> = findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "rule": f.rule, "severity": f.severity.as_str(), "message": f.message,
                "line": f.line, "column": f.column, "pointer": f.pointer, "element": f.element,
            })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

pub fn parse_labels(labels: &[String]) -> Result<Vec<String>, Error> {
    if labels.len() > MAX_LABELS {
        return Err(Error::invalid(
            "labels",
            format!("at most {MAX_LABELS} labels"),
        ));
    }
    let mut out = Vec::with_capacity(labels.len());
    for (i, l) in labels.iter().enumerate() {
        out.push(Slug::parse(&format!("labels/{i}"), l)?.into_string());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn payload_key(tenant_id: &str, artifact_id: &str, sha256: &str) -> String {
    draven_blob::key(&[
        "tenants",
        tenant_id,
        "artifacts",
        artifact_id,
        "payloads",
        sha256,
    ])
}

fn bundle_key(tenant_id: &str, sha256: &str) -> String {
    format!("tenants/{tenant_id}/bundles/{sha256}.tar")
}

fn kind_of(v: &Version) -> Kind {
    Kind::parse(&v.kind).unwrap_or(Kind::Bpmn)
}

fn node(v: &Version) -> Node {
    Node {
        key: v.artifact_key.clone(),
        number: v.number,
        provides: v.provides.clone(),
        requires: v
            .requires
            .iter()
            .map(|r| (r.kind.clone(), r.id.clone(), r.from.clone()))
            .collect(),
    }
}

/// The registry service: cheap to clone.
#[derive(Clone, Debug)]
pub struct Registry {
    pub db: Db,
    pub blobs: Blobs,
}

impl Registry {
    pub fn new(db: Db, blobs: Blobs) -> Registry {
        Registry { db, blobs }
    }

    pub async fn create_artifact(
        &self,
        actor: &Actor,
        tenant_id: &str,
        input: &ArtifactInput,
    ) -> Result<draven_store::registry::Artifact> {
        let key = Slug::parse("key", &input.key)?;
        let kind = Kind::parse(&input.kind)
            .ok_or_else(|| Error::invalid("kind", "kind must be bpmn, dmn, form or request"))?;
        let name = input.name.trim();
        if name.chars().count() > 200 {
            return Err(Error::invalid("name", "name may have at most 200 characters").into());
        }
        let new = draven_store::registry::NewArtifact {
            key: key.into_string(),
            kind: kind.as_str().to_owned(),
            name: if name.is_empty() {
                input.key.clone()
            } else {
                name.to_owned()
            },
            description: input.description.clone(),
            labels: parse_labels(&input.labels)?,
        };
        Ok(self.db.create_artifact(actor, tenant_id, &new).await?)
    }

    /// Validates and stores `bytes` as the payload of `artifact_id`: the object first.
    async fn store_payload(
        &self,
        tenant_id: &str,
        artifact_id: &str,
        kind: Kind,
        bytes: Bytes,
    ) -> Result<(Content, Report)> {
        let report = validate(kind, &bytes);
        let sha256 = sha256_hex(&bytes);
        let key = payload_key(tenant_id, artifact_id, &sha256);
        let written = self.blobs.put_immutable(&key, bytes).await?;
        let errors = report
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count() as i64;
        let content = Content {
            sha256,
            size: written.size as i64,
            payload_key: key,
            content_type: kind.content_type().to_owned(),
            findings: findings_json(&report.findings),
            errors,
            provides: report
                .provides
                .iter()
                .map(|(k, id)| (k.as_str().to_owned(), id.clone()))
                .collect(),
            requires: report
                .requires
                .iter()
                .map(|r| (r.kind.as_str().to_owned(), r.id.clone(), r.from.clone()))
                .collect(),
        };
        Ok((content, report))
    }

    /// Deletes a payload object unless a version row still points at it.
    async fn forget_payload(&self, tenant_id: &str, key: &str) {
        match self.db.payload_referenced(tenant_id, key).await {
            Ok(false) => {
                if let Err(e) = self.blobs.delete(key).await {
                    tracing::warn!(error = %e, key, "could not delete an orphaned payload; the sweeper will retry");
                }
            }
            Ok(true) => {}
            Err(e) => {
                tracing::warn!(error = %e, key, "could not check a payload's references; the sweeper will retry")
            }
        }
    }

    /// Adds a version (or returns the latest one, `false`, when the content is identical).
    pub async fn add_version(
        &self,
        actor: &Actor,
        tenant_id: &str,
        key: &str,
        bytes: Bytes,
        version_tag: &str,
    ) -> Result<(Version, bool)> {
        let a = self.db.get_artifact(tenant_id, key).await?;
        let kind = Kind::parse(&a.kind).unwrap_or(Kind::Bpmn);
        let (content, _) = self.store_payload(tenant_id, &a.id, kind, bytes).await?;
        match self
            .db
            .create_version(actor, tenant_id, key, &content, version_tag)
            .await
        {
            Ok(out) => Ok(out),
            Err(e) => {
                self.forget_payload(tenant_id, &content.payload_key).await;
                Err(e.into())
            }
        }
    }

    pub async fn replace_draft_payload(
        &self,
        actor: &Actor,
        tenant_id: &str,
        key: &str,
        number: i64,
        expected_revision: Option<i64>,
        bytes: Bytes,
    ) -> Result<Version> {
        let v = self.db.get_version(tenant_id, key, number).await?;
        if v.state != DRAFT {
            return Err(Error::conflict(format!(
                "version {number} of {key} is {}: published versions never change",
                v.state
            ))
            .into());
        }
        let (content, _) = self
            .store_payload(tenant_id, &v.artifact_id, kind_of(&v), bytes)
            .await?;
        match self
            .db
            .update_draft_content(actor, tenant_id, key, number, expected_revision, &content)
            .await
        {
            Ok((updated, old_key)) => {
                if old_key != updated.payload_key {
                    self.forget_payload(tenant_id, &old_key).await;
                }
                Ok(updated)
            }
            Err(e) => {
                self.forget_payload(tenant_id, &content.payload_key).await;
                Err(e.into())
            }
        }
    }

    pub async fn delete_draft(
        &self,
        actor: &Actor,
        tenant_id: &str,
        key: &str,
        number: i64,
        expected_revision: Option<i64>,
    ) -> Result<()> {
        let old = self
            .db
            .delete_draft(actor, tenant_id, key, number, expected_revision)
            .await?;
        self.forget_payload(tenant_id, &old).await;
        Ok(())
    }

    pub async fn delete_artifact(&self, actor: &Actor, tenant_id: &str, key: &str) -> Result<()> {
        for k in self.db.delete_artifact(actor, tenant_id, key).await? {
            self.forget_payload(tenant_id, &k).await;
        }
        Ok(())
    }

    /// The payload of a version, streamed.
    pub async fn payload(
        &self,
        v: &Version,
    ) -> Result<futures::stream::BoxStream<'static, Result<Bytes, BlobError>>> {
        let (_, stream) = self.blobs.get_stream(&v.payload_key).await?;
        Ok(stream)
    }

    /// Collects the dependency closure of `start`: members plus the newest published provider
    /// of anything they need that no member provides. Stops at unresolvable requirements.
    async fn closure(
        &self,
        tenant_id: &str,
        start: Vec<Version>,
    ) -> Result<BTreeMap<String, Version>> {
        let mut members: BTreeMap<String, Version> = start
            .into_iter()
            .map(|v| (v.artifact_key.clone(), v))
            .collect();
        let mut looked_up = std::collections::BTreeSet::new();
        loop {
            let nodes: BTreeMap<String, Node> =
                members.iter().map(|(k, v)| (k.clone(), node(v))).collect();
            let wanted: Vec<(String, String)> = unsatisfied(&nodes)
                .into_iter()
                .filter(|w| !looked_up.contains(w))
                .collect();
            if wanted.is_empty() {
                return Ok(members);
            }
            for (kind, id) in wanted {
                looked_up.insert((kind.clone(), id.clone()));
                if let Some(p) = self.db.provider_of(tenant_id, &kind, &id).await? {
                    // When another version of a member provides it, that member is the one in
                    // the release and the requirement stays unresolved (reported as missing).
                    members.entry(p.artifact_key.clone()).or_insert(p);
                }
            }
        }
    }

    /// Validates a release as a whole and stores its bundle, publishing its drafts atomically.
    pub async fn create_release(
        &self,
        actor: &Actor,
        tenant_id: &str,
        items: &[(String, i64)],
    ) -> Result<(Bundle, bool)> {
        if items.is_empty() || items.len() > MAX_RELEASE_ITEMS {
            return Err(Error::invalid(
                "items",
                format!("a release names 1-{MAX_RELEASE_ITEMS} versions"),
            )
            .into());
        }
        let mut requested = Vec::with_capacity(items.len());
        let mut seen = std::collections::BTreeSet::new();
        for (i, (key, number)) in items.iter().enumerate() {
            if !seen.insert(key.clone()) {
                return Err(Error::invalid(
                    &format!("items/{i}"),
                    format!("{key} is named twice; a release holds one version per artifact"),
                )
                .into());
            }
            let v = self
                .db
                .get_version(tenant_id, key, *number)
                .await
                .map_err(|e| Error::from(e).with_field(&format!("items/{i}")))?;
            if v.state == DEPRECATED {
                return Err(Error::invalid(
                    &format!("items/{i}"),
                    format!("version {number} of {key} is deprecated and cannot be released"),
                )
                .into());
            }
            requested.push(v);
        }
        let members = self.closure(tenant_id, requested).await?;
        let nodes: BTreeMap<String, Node> =
            members.iter().map(|(k, v)| (k.clone(), node(v))).collect();
        let resolution = resolve(&nodes);
        let mut problems: Vec<FieldError> = resolution
            .missing
            .iter()
            .map(|m| FieldError {
                field: format!("{}/{}", m.from, m.number),
                message: format!(
                    "{} {:?} (needed by {} in {} version {}) is not published and not in this release",
                    m.kind, m.id, m.element, m.from, m.number
                ),
            })
            .collect();
        for c in cycles(&resolution.edges) {
            problems.push(FieldError {
                field: c[0].clone(),
                message: format!("dependency cycle: {} -> {}", c.join(" -> "), c[0]),
            });
        }
        // Fetch every payload once: it goes into the tar, and is checked against its digest and
        // validated again, so the release is judged on exactly the bytes it ships.
        let mut payloads = Vec::with_capacity(members.len());
        for v in members.values() {
            let bytes = self.blobs.get(&v.payload_key).await?;
            if sha256_hex(&bytes) != v.sha256 {
                tracing::error!(artifact = %v.artifact_key, version = v.number, "stored payload does not match its digest");
                return Err(Error::new(
                    ErrorCode::Internal,
                    format!(
                        "payload of {} version {} is damaged in object storage",
                        v.artifact_key, v.number
                    ),
                )
                .into());
            }
            let report = validate(kind_of(v), &bytes);
            for f in report
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
            {
                problems.push(FieldError {
                    field: format!("{}/{}", v.artifact_key, v.number),
                    message: format!(
                        "{}: {}{}",
                        f.rule,
                        f.message,
                        f.line.map(|l| format!(" (line {l})")).unwrap_or_default()
                    ),
                });
            }
            payloads.push((
                item_path(&v.artifact_key, v.number, kind_of(v).extension()),
                bytes.to_vec(),
            ));
        }
        if !problems.is_empty() {
            let n = problems.len();
            return Err(Error::new(
                ErrorCode::ValidationFailed,
                format!("the release cannot be published: {n} problem(s); nothing was published"),
            )
            .with_field("items")
            .with_errors(problems)
            .into());
        }
        let manifest = Manifest::new(
            members
                .values()
                .map(|v| ManifestItem {
                    key: v.artifact_key.clone(),
                    kind: v.kind.clone(),
                    version: v.number,
                    version_tag: v.version_tag.clone(),
                    sha256: v.sha256.clone(),
                    size: v.size,
                    path: item_path(&v.artifact_key, v.number, kind_of(v).extension()),
                    provides: v
                        .provides
                        .iter()
                        .map(|(k, i)| RefEntry {
                            kind: k.clone(),
                            id: i.clone(),
                        })
                        .collect(),
                    dependencies: resolution
                        .edges
                        .iter()
                        .filter(|e| e.from == v.artifact_key)
                        .map(|e| Dependency {
                            kind: e.kind.clone(),
                            id: e.id.clone(),
                            from: e.element.clone(),
                            resolved_by: ResolvedBy {
                                key: e.to.clone(),
                                version: members[&e.to].number,
                            },
                        })
                        .collect(),
                })
                .collect(),
        );
        let tar = build_tar(&manifest, &payloads)
            .map_err(|e| StoreError::Corrupt(format!("building the bundle: {e}")))?;
        let sha = sha256_hex(&tar);
        let key = bundle_key(tenant_id, &sha);
        let size = tar.len() as i64;
        self.blobs.put_immutable(&key, Bytes::from(tar)).await?;
        let manifest_text = String::from_utf8(manifest.to_json()).unwrap_or_default();
        let bundle_members: Vec<Member> = members
            .values()
            .map(|v| Member {
                version_id: v.id.clone(),
                key: v.artifact_key.clone(),
                number: v.number,
                draft_revision: (v.state == DRAFT).then_some(v.revision),
            })
            .collect();
        let new = draven_store::registry_release::NewBundle {
            sha256: &sha,
            size,
            object_key: &key,
            manifest: &manifest_text,
            members: &bundle_members,
        };
        Ok(self.db.create_bundle(actor, tenant_id, &new).await?)
    }

    /// The dependency graph around one version: its closure, resolved edges, what is missing and
    /// any cycles. Never fails on a broken graph; it reports it.
    pub async fn graph(&self, tenant_id: &str, key: &str, number: i64) -> Result<Graph> {
        let v = self.db.get_version(tenant_id, key, number).await?;
        let members = self.closure(tenant_id, vec![v]).await?;
        let nodes: BTreeMap<String, Node> =
            members.iter().map(|(k, v)| (k.clone(), node(v))).collect();
        let r = resolve(&nodes);
        Ok(Graph {
            nodes: members
                .values()
                .map(|v| GraphNode {
                    key: v.artifact_key.clone(),
                    kind: v.kind.clone(),
                    version: v.number,
                    state: v.state.clone(),
                })
                .collect(),
            cycles: cycles(&r.edges),
            edges: r.edges,
            missing: r.missing,
        })
    }

    /// Deletes payload objects of `tenant_id` that no version points at and that are older than
    /// [`ORPHAN_MIN_AGE_MS`] (left by a crash between the object write and the commit).
    pub async fn sweep_orphans(&self, tenant_id: &str, now_ms: i64) -> Result<usize> {
        let referenced = self.db.referenced_payloads(tenant_id).await?;
        let mut removed = 0;
        for (key, modified) in self
            .blobs
            .list_with_times(&format!("tenants/{tenant_id}/artifacts"))
            .await?
        {
            if key.contains("/payloads/")
                && !referenced.contains(&key)
                && now_ms - modified > ORPHAN_MIN_AGE_MS
            {
                self.blobs.delete(&key).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
