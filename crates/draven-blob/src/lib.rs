//! Object storage for payloads, bundles and large logs, over the `object_store` crate: a local
//! directory by default, any S3-compatible store by configuration.
//!
//! Keys are structured per tenant (`tenants/{tenant}/…`); callers build them with [`key`]. This
//! crate adds what the domains need on top of a plain store: sha256 on every write, immutable
//! (create-only) writes for content-addressed objects, and a readiness probe. It knows nothing
//! about tenants' rules or HTTP.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use sha2::{Digest, Sha256};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("object {key} already exists with different content")]
    Immutable { key: String },
    #[error("invalid object store setting: {0}")]
    Config(String),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

pub type Result<T, E = BlobError> = std::result::Result<T, E>;

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub key: String,
    pub sha256: String,
    pub size: u64,
}

/// Where objects live, parsed from `DRAVEN_OBJECT_STORE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Directory(std::path::PathBuf),
    S3 { bucket: String, prefix: String },
}

impl Location {
    /// `s3://bucket/prefix` or a directory path (`file://` optional).
    pub fn parse(spec: &str) -> Result<Location> {
        if let Some(rest) = spec.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(BlobError::Config(format!(
                    "{spec:?} names no bucket; use s3://bucket/prefix"
                )));
            }
            Ok(Location::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            })
        } else if spec.contains("://") && !spec.starts_with("file://") {
            Err(BlobError::Config(format!(
                "{spec:?}: use a directory or s3://bucket/prefix"
            )))
        } else {
            Ok(Location::Directory(
                spec.trim_start_matches("file://").into(),
            ))
        }
    }
}

/// S3 connection settings beyond the location; credentials and region also come from the
/// standard `AWS_*` environment variables when not set here.
#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

/// The object store handle: cheap to clone.
#[derive(Clone, Debug)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    describe: String,
}

/// Joins key segments with `/`, refusing segments that would escape their place.
pub fn key(segments: &[&str]) -> String {
    debug_assert!(segments
        .iter()
        .all(|s| !s.is_empty() && !s.contains("..") && !s.starts_with('/')));
    segments.join("/")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

const PROBE_KEY: &str = ".draven/probe";

impl Blobs {
    pub fn open(location: &Location, s3: &S3Settings) -> Result<Blobs> {
        match location {
            Location::Directory(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    BlobError::Config(format!("cannot create {}: {e}", dir.display()))
                })?;
                let store = LocalFileSystem::new_with_prefix(dir)?.with_automatic_cleanup(true);
                Ok(Blobs {
                    store: Arc::new(store),
                    prefix: String::new(),
                    describe: format!("directory {}", dir.display()),
                })
            }
            Location::S3 { bucket, prefix } => {
                let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(ep) = &s3.endpoint {
                    // A custom endpoint (MinIO, moto, Garage…) usually means path-style and may
                    // be plain HTTP on a private network.
                    b = b
                        .with_endpoint(ep)
                        .with_virtual_hosted_style_request(false)
                        .with_allow_http(ep.starts_with("http://"));
                }
                if let Some(r) = &s3.region {
                    b = b.with_region(r);
                }
                if let Some(k) = &s3.access_key_id {
                    b = b.with_access_key_id(k);
                }
                if let Some(s) = &s3.secret_access_key {
                    b = b.with_secret_access_key(s);
                }
                let store = b.build()?;
                Ok(Blobs {
                    store: Arc::new(store),
                    prefix: prefix.clone(),
                    describe: format!("s3://{bucket}/{prefix}"),
                })
            }
        }
    }

    /// A store over an existing `ObjectStore` (tests, embedding).
    pub fn from_store(store: Arc<dyn ObjectStore>, prefix: &str) -> Blobs {
        Blobs {
            store,
            prefix: prefix.trim_matches('/').to_owned(),
            describe: "custom".into(),
        }
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(key)
        } else {
            Path::from(format!("{}/{key}", self.prefix))
        }
    }

    /// Writes (or replaces) an object.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<Written> {
        let sha256 = sha256_hex(&bytes);
        let size = bytes.len() as u64;
        self.store
            .put(&self.path(key), PutPayload::from_bytes(bytes))
            .await?;
        Ok(Written {
            key: key.to_owned(),
            sha256,
            size,
        })
    }

    /// Writes an object that must never change: if `key` exists with the same content this is a
    /// no-op; with other content it fails with [`BlobError::Immutable`].
    pub async fn put_immutable(&self, key: &str, bytes: Bytes) -> Result<Written> {
        let sha256 = sha256_hex(&bytes);
        let size = bytes.len() as u64;
        let path = self.path(key);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&path, PutPayload::from_bytes(bytes.clone()), opts)
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                let existing = self.get(key).await?;
                if sha256_hex(&existing) != sha256 {
                    return Err(BlobError::Immutable {
                        key: key.to_owned(),
                    });
                }
            }
            Err(object_store::Error::NotImplemented) => {
                // Stores without conditional writes: check, then write. Racy only between two
                // writers of the same key, which for content-addressed keys write equal bytes.
                match self.get(key).await {
                    Ok(existing) if sha256_hex(&existing) == sha256 => {}
                    Ok(_) => {
                        return Err(BlobError::Immutable {
                            key: key.to_owned(),
                        })
                    }
                    Err(BlobError::NotFound(_)) => {
                        self.store.put(&path, PutPayload::from_bytes(bytes)).await?;
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Written {
            key: key.to_owned(),
            sha256,
            size,
        })
    }

    pub async fn get(&self, key: &str) -> Result<Bytes> {
        match self.store.get(&self.path(key)).await {
            Ok(r) => Ok(r.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::NotFound(key.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    /// Streams an object in chunks, for large downloads.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<(u64, futures::stream::BoxStream<'static, Result<Bytes>>)> {
        match self.store.get(&self.path(key)).await {
            Ok(r) => {
                let size = r.meta.size;
                Ok((size, r.into_stream().map_err(BlobError::from).boxed()))
            }
            Err(object_store::Error::NotFound { .. }) => Err(BlobError::NotFound(key.to_owned())),
            Err(e) => Err(e.into()),
        }
    }

    /// Size of an object, or `None` when absent.
    pub async fn size(&self, key: &str) -> Result<Option<u64>> {
        match self.store.head(&self.path(key)).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an object; deleting an absent one succeeds.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Keys under `prefix`, relative to the store's own prefix, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let base = self.path(prefix);
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut keys: Vec<String> = self
            .store
            .list(Some(&base))
            .map_ok(|m| m.location.as_ref()[strip..].to_owned())
            .try_collect()
            .await?;
        keys.sort();
        Ok(keys)
    }

    /// Keys under `prefix` with their last-modified time in epoch milliseconds.
    pub async fn list_with_times(&self, prefix: &str) -> Result<Vec<(String, i64)>> {
        let base = self.path(prefix);
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut keys: Vec<(String, i64)> = self
            .store
            .list(Some(&base))
            .map_ok(|m| {
                (
                    m.location.as_ref()[strip..].to_owned(),
                    m.last_modified.timestamp_millis(),
                )
            })
            .try_collect()
            .await?;
        keys.sort();
        Ok(keys)
    }

    /// Writes the readiness probe object; done once at start.
    pub async fn init_probe(&self) -> Result<()> {
        self.put(PROBE_KEY, Bytes::from_static(b"ok"))
            .await
            .map(|_| ())
    }

    /// One cheap request proving the store answers (and the probe is still there).
    pub async fn probe(&self) -> Result<()> {
        match self.size(PROBE_KEY).await? {
            Some(_) => Ok(()),
            None => Err(BlobError::NotFound(PROBE_KEY.into())),
        }
    }
}

/// Test support: a fresh store on a local directory and, when `DRAVEN_TEST_S3_ENDPOINT` is set
/// (the test script starts an S3 server and sets it), on S3 under a unique prefix. Under
/// `CI=true` a missing S3 endpoint fails the test instead of skipping it.
pub mod testing {
    use super::*;

    pub struct TestBlobs {
        pub blobs: Blobs,
        /// The `DRAVEN_OBJECT_STORE` value that reaches the same place.
        pub spec: String,
        pub s3: S3Settings,
        _dir: Option<tempfile::TempDir>,
    }

    pub fn local() -> TestBlobs {
        let dir = tempfile::tempdir().expect("temp dir");
        let spec = dir.path().display().to_string();
        let blobs = Blobs::open(&Location::parse(&spec).unwrap(), &S3Settings::default()).unwrap();
        TestBlobs {
            blobs,
            spec,
            s3: S3Settings::default(),
            _dir: Some(dir),
        }
    }

    pub fn s3() -> Option<TestBlobs> {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        let Ok(endpoint) = std::env::var("DRAVEN_TEST_S3_ENDPOINT") else {
            if ci {
                panic!("CI=true and DRAVEN_TEST_S3_ENDPOINT is not set: the S3 server did not start (run scripts/test.sh)");
            }
            eprintln!("SKIPPED (no DRAVEN_TEST_S3_ENDPOINT; scripts/test.sh starts an S3 server and sets it)");
            return None;
        };
        let bucket =
            std::env::var("DRAVEN_TEST_S3_BUCKET").unwrap_or_else(|_| "draven-test".into());
        let spec = format!("s3://{bucket}/t-{}", uuid::Uuid::new_v4().simple());
        let s3 = S3Settings {
            endpoint: Some(endpoint),
            region: Some("us-east-1".into()),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
        };
        let blobs = Blobs::open(&Location::parse(&spec).unwrap(), &s3).unwrap();
        Some(TestBlobs {
            blobs,
            spec,
            s3,
            _dir: None,
        })
    }
}
