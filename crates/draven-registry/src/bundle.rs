//! Deterministic bundles: a tar with `manifest.json` and one file per version, byte-identical
//! for identical inputs (entries sorted, fixed mtime, owner and mode), addressed by its sha256.

use serde::Serialize;

pub const FORMAT: &str = "draven.bundle/v1";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, PartialOrd, Ord)]
pub struct RefEntry {
    pub kind: String,
    pub id: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, PartialOrd, Ord)]
pub struct ResolvedBy {
    pub key: String,
    pub version: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, PartialOrd, Ord)]
pub struct Dependency {
    pub kind: String,
    pub id: String,
    pub from: String,
    pub resolved_by: ResolvedBy,
}

/// One version in the manifest. Field order is the serialization order, so keep it stable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ManifestItem {
    pub key: String,
    pub kind: String,
    pub version: i64,
    pub version_tag: String,
    pub sha256: String,
    pub size: i64,
    pub path: String,
    pub provides: Vec<RefEntry>,
    pub dependencies: Vec<Dependency>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Manifest {
    pub format: &'static str,
    pub items: Vec<ManifestItem>,
}

impl Manifest {
    /// Sorts everything that has no inherent order, so equal sets give equal bytes.
    pub fn new(mut items: Vec<ManifestItem>) -> Manifest {
        for i in &mut items {
            i.provides.sort();
            i.dependencies.sort();
        }
        items.sort_by(|a, b| a.key.cmp(&b.key));
        Manifest {
            format: FORMAT,
            items,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

/// The path of a version's payload inside the bundle.
pub fn item_path(key: &str, version: i64, extension: &str) -> String {
    format!("artifacts/{key}/{version}.{extension}")
}

/// Builds the tar: `manifest.json` first, then the payloads sorted by path, every header fixed.
pub fn build_tar(manifest: &Manifest, payloads: &[(String, Vec<u8>)]) -> std::io::Result<Vec<u8>> {
    let mut entries: Vec<(&str, &[u8])> = payloads
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let manifest_bytes = manifest.to_json();
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    for (path, bytes) in
        std::iter::once(("manifest.json", manifest_bytes.as_slice())).chain(entries)
    {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, bytes)?;
    }
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str) -> ManifestItem {
        ManifestItem {
            key: key.into(),
            kind: "bpmn".into(),
            version: 1,
            version_tag: String::new(),
            sha256: "00".into(),
            size: 3,
            path: item_path(key, 1, "bpmn"),
            provides: vec![
                RefEntry {
                    kind: "process".into(),
                    id: "b".into(),
                },
                RefEntry {
                    kind: "process".into(),
                    id: "a".into(),
                },
            ],
            dependencies: vec![],
        }
    }

    #[test]
    fn identical_inputs_give_identical_bytes_whatever_the_order() {
        let one = Manifest::new(vec![item("x"), item("a")]);
        let two = Manifest::new(vec![item("a"), item("x")]);
        let p1 = vec![
            (item_path("x", 1, "bpmn"), b"<x/>".to_vec()),
            (item_path("a", 1, "bpmn"), b"<a/>".to_vec()),
        ];
        let mut p2 = p1.clone();
        p2.reverse();
        let t1 = build_tar(&one, &p1).unwrap();
        let t2 = build_tar(&two, &p2).unwrap();
        assert_eq!(t1, t2);
        // And the archive reads back: manifest first, payloads sorted.
        let mut archive = tar::Archive::new(t1.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            vec!["manifest.json", "artifacts/a/1.bpmn", "artifacts/x/1.bpmn"]
        );
        assert_eq!(one.items[0].provides[0].id, "a");
    }
}
