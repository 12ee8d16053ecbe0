//! The manifest of a case bundle (`manifest.json`, signed into
//! `manifest.sig`) and its `sha256sum` twin (`SHA256SUMS`, signed into
//! `SHA256SUMS.sig`): what the case is, who exported it and when, which
//! events it holds and where, and the SHA-256 and size of every file.
//!
//! Invariant: the manifest's `files` are sorted by path and name every file
//! of the bundle except the four control files (`layout::CONTROL_FILES`);
//! `SHA256SUMS` is exactly [`sums`] of those files plus `manifest.json`, so
//! a checker can rebuild it from the manifest and compare bytes.

use serde::{Deserialize, Serialize};

use super::layout;

/// The `format` of bundles this code writes and reads.
pub const FORMAT: &str = "kiroku-case-bundle/1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    /// The case name the exporter gave.
    pub case: String,
    /// Why, as the exporter gave it (also in the audit entry).
    pub reason: String,
    /// The search that selected the events (a `SearchRequest` as JSON).
    pub filter: serde_json::Value,
    /// The exporter's identity (`admin/alice`).
    pub exporter: String,
    /// The collector's name (its signing certificate's).
    pub collector: String,
    pub exported_at: String,
    pub exported_at_ms: i64,
    /// The export's own audit entry (also in `audit/entries.jsonl`).
    pub audit_seq: u64,
    pub audit_hash: String,
    /// Empty when signed; else why the bundle is unsigned (the collector
    /// has no signing key) — such a bundle proves nothing by itself.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unsigned: String,
    pub events: Vec<ManifestEvent>,
    /// Numbers of the checkpoints in `checkpoints/`.
    pub checkpoints: Vec<u64>,
    pub files: Vec<FileEntry>,
}

/// One exported event and its files (paths inside the bundle).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEvent {
    pub event_id: String,
    /// email, file, host_change, gap, integrity.
    pub kind: String,
    pub event: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub recorded: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub additions: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub proof: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mail: String,
    /// The journal leaf (absent: an event stored before the journal was
    /// chained, which nothing but the manifest signature covers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf: Option<u64>,
    /// The checkpoint whose tree the proof is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<u64>,
    /// What is not there and why (no raw message kept, not yet covered by
    /// a checkpoint, stored before the chain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// `SHA256SUMS`: one `sha256sum` line (`<hex>  <path>`) per file, sorted
/// by path. Bundle paths never hold a backslash or a newline
/// (`layout::check_path`), so no line needs `sha256sum`'s escaping.
pub fn sums(files: &[FileEntry]) -> String {
    let mut sorted: Vec<&FileEntry> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    sorted
        .iter()
        .map(|f| format!("{}  {}\n", f.sha256, f.path))
        .collect()
}

/// The files `SHA256SUMS` lists: the manifest's files and the manifest.
pub fn sums_files(m: &Manifest, manifest_bytes: &[u8]) -> Vec<FileEntry> {
    let mut files = m.files.clone();
    files.push(FileEntry {
        path: layout::MANIFEST.into(),
        sha256: kiroku_common::sha256_hex(manifest_bytes),
        bytes: manifest_bytes.len() as u64,
    });
    files
}

/// The manifest as written: pretty JSON with a final newline.
pub fn to_bytes(m: &Manifest) -> Vec<u8> {
    let mut v = serde_json::to_vec_pretty(m).unwrap_or_default();
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, data: &[u8]) -> FileEntry {
        FileEntry {
            path: path.into(),
            sha256: kiroku_common::sha256_hex(data),
            bytes: data.len() as u64,
        }
    }

    #[test]
    fn sums_are_sorted_sha256sum_lines() {
        let s = sums(&[entry("b.txt", b"b"), entry("a/x.eml", b"")]);
        assert_eq!(
            s,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  a/x.eml\n\
             3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d  b.txt\n"
        );
    }

    #[test]
    fn manifest_round_trip_refuses_unknown_fields() {
        let m = Manifest {
            format: FORMAT.into(),
            case: "c".into(),
            reason: String::new(),
            filter: serde_json::json!({"sender": "a@b"}),
            exporter: "admin/a".into(),
            collector: "c1".into(),
            exported_at: "2026-12-06T01:00:00Z".into(),
            exported_at_ms: 1,
            audit_seq: 3,
            audit_hash: "00".into(),
            unsigned: String::new(),
            events: vec![ManifestEvent {
                event_id: "h/s/1".into(),
                kind: "email".into(),
                event: "events/h/s/1.json".into(),
                recorded: String::new(),
                additions: String::new(),
                proof: String::new(),
                mail: String::new(),
                leaf: Some(4),
                checkpoint: None,
                notes: vec![],
            }],
            checkpoints: vec![],
            files: vec![entry("a", b"a")],
        };
        let bytes = to_bytes(&m);
        let back: Manifest = serde_json::from_slice(&bytes).expect("parse");
        assert_eq!(back, m);
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        v["extra"] = serde_json::json!(1);
        assert!(serde_json::from_value::<Manifest>(v).is_err());
        let listed = sums_files(&m, &bytes);
        assert_eq!(
            listed.last().map(|f| f.path.as_str()),
            Some(layout::MANIFEST)
        );
    }
}
