//! `kiroku verify-bundle`: a case bundle checked offline with the CA
//! certificate alone. Every problem is a [`Finding`] naming the file; the
//! check goes on past each one, so one run lists everything wrong.
//!
//! In order: the directory's files (no symlinks, nothing extra, nothing
//! missing), the manifest's signature (the signer's certificate chains to
//! the CA and has the signer role), `SHA256SUMS` (exactly the manifest's
//! files, signed too), every file's size and SHA-256, every checkpoint
//! (signature, time stamp, and its `openssl` copies equal to it), then each
//! event: its proof's journal entry holds exactly the recorded and
//! additions files, the recorded bytes hash to `additions.recorded_sha256`,
//! the proof leads to the checkpoint's signed root, the JSON is the merged
//! view of those bytes, the raw mail hashes to the event's `raw_sha256`;
//! and the audit entries' own hashes, the export's entry among them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use kiroku_proto::{Additions, Checkpoint, InclusionProof, JournalEntry, SignedCheckpoint};
use prost::Message;
use sha2::{Digest, Sha256};

use super::layout::{self, CONTROL_FILES};
use super::manifest::{self, Manifest, ManifestEvent};
use super::trust;

/// Largest file read whole (JSON, protobuf, signatures); mail is hashed
/// as a stream whatever its size.
const MAX_READ: u64 = 64 * 1024 * 1024;
/// Most files a bundle directory may hold before the walk gives up.
const MAX_FILES: usize = 10_000_000;

/// One thing wrong with a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// "missing", "extra", "altered", "unsigned", "bad_signature",
    /// "bad_manifest", "bad_checkpoint", "bad_proof", "mismatch",
    /// "bad_audit".
    pub what: &'static str,
    /// The bundle file concerned.
    pub path: String,
    pub detail: String,
}

/// What a check found and covered.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub manifest: Option<Manifest>,
    /// Who signed the manifest (the signer certificate's name).
    pub signer: Option<String>,
    pub files: usize,
    pub bytes: u64,
    pub events: usize,
    /// Events whose proof led to a signed checkpoint.
    pub proven: usize,
    pub checkpoints: usize,
    /// Checkpoints whose RFC 3161 time stamp was not checked (no TSA CA
    /// given): not a problem of the bundle.
    pub unchecked_timestamps: usize,
    pub audit_entries: usize,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.findings.is_empty()
    }

    fn find(&mut self, what: &'static str, path: &str, detail: impl Into<String>) {
        self.findings.push(Finding {
            what,
            path: path.to_owned(),
            detail: detail.into(),
        });
    }
}

/// The bundle directory itself could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {error}")]
pub struct CheckError {
    pub path: String,
    pub error: String,
}

/// Checks the bundle in `dir` against the CA certificate `ca_pem` (and
/// the checkpoints' time stamps against `tsa_ca`, the TSA's CA, if given).
pub fn check_bundle(
    dir: &Path,
    ca_pem: &[u8],
    tsa_ca: Option<&[u8]>,
) -> Result<Report, CheckError> {
    let mut r = Report::default();
    let present = walk(dir, &mut r)?;
    let Some((m, manifest_bytes)) = read_manifest(dir, &present, &mut r) else {
        return Ok(r);
    };
    signatures(dir, &m, &manifest_bytes, ca_pem, &mut r);
    let hashes = files(dir, &m, &present, &mut r);
    let checkpoints = checkpoints(dir, &m, &hashes, (ca_pem, tsa_ca), &mut r);
    for e in &m.events {
        event(dir, e, &hashes, &checkpoints, &mut r);
    }
    r.events = m.events.len();
    audit(dir, &m, &hashes, &mut r);
    r.manifest = Some(m);
    Ok(r)
}

/// Every regular file under `dir` (relative, `/`-separated); anything else
/// (a symlink, a device, a name that is not a bundle path) is a finding.
fn walk(dir: &Path, r: &mut Report) -> Result<BTreeSet<String>, CheckError> {
    let err = |p: &Path, e: std::io::Error| CheckError {
        path: p.display().to_string(),
        error: e.to_string(),
    };
    let meta = std::fs::metadata(dir).map_err(|e| err(dir, e))?;
    if !meta.is_dir() {
        return Err(CheckError {
            path: dir.display().to_string(),
            error: "not a directory".into(),
        });
    }
    let mut out = BTreeSet::new();
    let mut todo = vec![(dir.to_owned(), String::new(), 0usize)];
    while let Some((abs, rel, depth)) = todo.pop() {
        for ent in std::fs::read_dir(&abs).map_err(|e| err(&abs, e))? {
            let ent = ent.map_err(|e| err(&abs, e))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ty = ent.file_type().map_err(|e| err(&ent.path(), e))?;
            if ty.is_dir() && depth < layout::MAX_DEPTH {
                todo.push((ent.path(), path, depth + 1));
            } else if !ty.is_file() {
                r.find(
                    "extra",
                    &path,
                    "not a regular file (a symlink, a device or a directory too deep); a bundle holds files only",
                );
            } else if out.len() >= MAX_FILES {
                return Err(CheckError {
                    path: dir.display().to_string(),
                    error: format!("more than {MAX_FILES} files; not a case bundle"),
                });
            } else {
                out.insert(path);
            }
        }
    }
    r.files = out.len();
    Ok(out)
}

fn read_manifest(
    dir: &Path,
    present: &BTreeSet<String>,
    r: &mut Report,
) -> Option<(Manifest, Vec<u8>)> {
    if !present.contains(layout::MANIFEST) {
        r.find(
            "missing",
            layout::MANIFEST,
            "no manifest: not a case bundle, or it was removed",
        );
        return None;
    }
    let bytes = read_small(dir, layout::MANIFEST, r)?;
    match serde_json::from_slice::<Manifest>(&bytes) {
        Ok(m) if m.format == manifest::FORMAT => Some((m, bytes)),
        Ok(m) => {
            r.find(
                "bad_manifest",
                layout::MANIFEST,
                format!(
                    "format {} (this kiroku reads {})",
                    kiroku_common::quote::quote_clipped(&m.format, 60),
                    manifest::FORMAT
                ),
            );
            None
        }
        Err(e) => {
            r.find(
                "bad_manifest",
                layout::MANIFEST,
                format!("not a bundle manifest: {e}"),
            );
            None
        }
    }
}

/// The manifest's and `SHA256SUMS`' signatures, and `SHA256SUMS` being
/// exactly the manifest's list.
fn signatures(dir: &Path, m: &Manifest, manifest_bytes: &[u8], ca_pem: &[u8], r: &mut Report) {
    if !m.unsigned.is_empty() {
        r.find(
            "unsigned",
            layout::MANIFEST,
            format!(
                "the collector signed nothing ({}): the hashes below prove the files match the manifest, not who made it",
                m.unsigned
            ),
        );
    }
    let cert = read_small(dir, layout::SIGNER_PEM, r).and_then(|pem| match pem_to_der(&pem) {
        Ok(der) => Some(der),
        Err(e) => {
            r.find("bad_signature", layout::SIGNER_PEM, e);
            None
        }
    });
    let want_sums = manifest::sums(&manifest::sums_files(m, manifest_bytes));
    match read_small(dir, layout::SUMS, r) {
        Some(sums) if sums != want_sums.as_bytes() => r.find(
            "altered",
            layout::SUMS,
            "does not list exactly the manifest's files and hashes",
        ),
        _ => {}
    }
    let Some(cert) = cert else { return };
    for (data_path, sig_path) in [
        (layout::MANIFEST, layout::MANIFEST_SIG),
        (layout::SUMS, layout::SUMS_SIG),
    ] {
        let data = if data_path == layout::MANIFEST {
            Some(manifest_bytes.to_vec())
        } else {
            read_small(dir, data_path, r)
        };
        let (Some(data), Some(sig)) = (data, read_small(dir, sig_path, r)) else {
            continue;
        };
        match trust::verify_signature(&data, &sig, &cert, ca_pem, m.exported_at_ms) {
            Ok(signer) => r.signer = Some(signer),
            Err(e) => r.find(
                "bad_signature",
                sig_path,
                format!("the signature over {data_path} does not verify: {e}"),
            ),
        }
    }
}

/// Every file present against the manifest's list: missing, extra, size
/// and SHA-256. Returns the SHA-256 of every listed file that matched.
fn files(
    dir: &Path,
    m: &Manifest,
    present: &BTreeSet<String>,
    r: &mut Report,
) -> BTreeMap<String, String> {
    let mut ok = BTreeMap::new();
    let mut listed = BTreeSet::new();
    for f in &m.files {
        if let Err(e) = layout::check_path(&f.path) {
            r.find("bad_manifest", layout::MANIFEST, e.to_string());
            continue;
        }
        listed.insert(f.path.clone());
        if !present.contains(&f.path) {
            r.find(
                "missing",
                &f.path,
                "listed in the manifest, not in the bundle",
            );
            continue;
        }
        match hash_file(&dir.join(&f.path)) {
            Err(e) => r.find("missing", &f.path, format!("cannot be read: {e}")),
            Ok((sha, size)) => {
                r.bytes += size;
                if size != f.bytes {
                    let how = if size < f.bytes {
                        "truncated"
                    } else {
                        "padded"
                    };
                    r.find(
                        "altered",
                        &f.path,
                        format!("{size} bytes, the manifest says {} ({how})", f.bytes),
                    );
                } else if sha != f.sha256 {
                    r.find(
                        "altered",
                        &f.path,
                        format!("SHA-256 {sha}, the manifest says {}", f.sha256),
                    );
                } else {
                    ok.insert(f.path.clone(), sha);
                }
            }
        }
    }
    for p in present {
        if !listed.contains(p) && !CONTROL_FILES.contains(&p.as_str()) {
            r.find("extra", p, "in the bundle but not in the manifest");
        }
    }
    // An unsigned bundle has no signatures (its manifest says why).
    let unsigned_sig = |c: &str| c.ends_with(".sig") && !m.unsigned.is_empty();
    for c in CONTROL_FILES {
        if !present.contains(c) && !unsigned_sig(c) {
            r.find("missing", c, "a bundle's control file");
        }
    }
    ok
}

/// Each checkpoint the manifest names, checked against the CA; its
/// content by number.
fn checkpoints(
    dir: &Path,
    m: &Manifest,
    hashes: &BTreeMap<String, String>,
    (ca_pem, tsa_ca): (&[u8], Option<&[u8]>),
    r: &mut Report,
) -> BTreeMap<u64, Checkpoint> {
    let mut out = BTreeMap::new();
    for &n in &m.checkpoints {
        let path = layout::checkpoint_path(n, "ckp");
        let Some(bytes) = verified(dir, &path, hashes, r) else {
            continue;
        };
        let signed = match SignedCheckpoint::decode(bytes.as_slice()) {
            Ok(s) => s,
            Err(e) => {
                r.find(
                    "bad_checkpoint",
                    &path,
                    format!("not a signed checkpoint: {e}"),
                );
                continue;
            }
        };
        // The copies for openssl must be the checkpoint's own parts, or a
        // reader checking them with openssl would check something else.
        for (ext, want) in [
            ("bin", &signed.checkpoint),
            ("sig", &signed.signature),
            ("der", &signed.signer_cert_der),
            ("tsr", &signed.timestamp_token),
        ] {
            let p = layout::checkpoint_path(n, ext);
            let listed = m.files.iter().any(|f| f.path == p);
            if want.is_empty() && !listed {
                continue;
            }
            if verified(dir, &p, hashes, r).as_ref() != Some(want) {
                r.find("mismatch", &p, format!("is not the {ext} part of {path}"));
            }
        }
        match trust::check_checkpoint(&signed, ca_pem, tsa_ca) {
            Ok((c, unchecked_stamp)) if c.number == n => {
                r.checkpoints += 1;
                r.unchecked_timestamps += usize::from(unchecked_stamp);
                out.insert(n, c);
            }
            Ok((c, _)) => r.find(
                "bad_checkpoint",
                &path,
                format!("holds checkpoint {}, not {n}", c.number),
            ),
            Err(e) => r.find("bad_checkpoint", &path, e),
        }
    }
    out
}

/// One event: its files against its proof and its checkpoint.
fn event(
    dir: &Path,
    e: &ManifestEvent,
    hashes: &BTreeMap<String, String>,
    checkpoints: &BTreeMap<u64, Checkpoint>,
    r: &mut Report,
) {
    let Some(json) = verified(dir, &e.event, hashes, r) else {
        return;
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(&json) else {
        r.find("bad_manifest", &e.event, "not JSON");
        return;
    };
    if let Some(raw_sha) = json
        .pointer("/kind/Email/raw_sha256")
        .and_then(|v| v.as_str())
        && !raw_sha.is_empty()
        && !e.mail.is_empty()
        && let Some(got) = hashes.get(&e.mail)
        && got != raw_sha
    {
        r.find(
            "mismatch",
            &e.mail,
            format!("SHA-256 {got}, the event's raw message is {raw_sha}"),
        );
    }
    let Some(leaf) = e.leaf else {
        return;
    };
    let (Some(recorded), Some(additions), Some(proof)) = (
        verified(dir, &e.recorded, hashes, r),
        verified(dir, &e.additions, hashes, r),
        verified(dir, &e.proof, hashes, r),
    ) else {
        return;
    };
    let (proof, entry) = match decode_proof(&proof) {
        Ok(p) => p,
        Err(why) => return r.find("bad_proof", &e.proof, why),
    };
    let Some(kiroku_proto::journal_entry::Entry::Event(stored)) = &entry.entry else {
        return r.find("bad_proof", &e.proof, "its journal entry is not an event");
    };
    let adds = stored.additions.clone().unwrap_or_default();
    let sha = Sha256::digest(&recorded);
    if proof.event_id != e.event_id || adds.event_id != e.event_id {
        r.find("mismatch", &e.proof, "is the proof of another event");
    } else if entry.leaf != leaf || proof.leaf != leaf {
        r.find(
            "mismatch",
            &e.proof,
            format!("is for leaf {}, the manifest says {leaf}", entry.leaf),
        );
    } else if stored.recorded != recorded {
        r.find(
            "mismatch",
            &e.recorded,
            "is not the agent's bytes in the journal entry",
        );
    } else if adds.recorded_sha256 != sha.as_slice() {
        r.find(
            "mismatch",
            &e.recorded,
            "its SHA-256 is not the additions' recorded_sha256",
        );
    } else if Additions::decode(additions.as_slice()).ok().as_ref() != Some(&adds) {
        r.find(
            "mismatch",
            &e.additions,
            "is not the additions in the journal entry",
        );
    } else if !merged_is(stored, &json) {
        r.find(
            "mismatch",
            &e.event,
            "is not the merged view of the recorded bytes and additions",
        );
    } else {
        prove(e, &proof, checkpoints, r);
    }
}

fn decode_proof(bytes: &[u8]) -> Result<(InclusionProof, JournalEntry), String> {
    let proof = InclusionProof::decode(bytes).map_err(|e| format!("not a proof: {e}"))?;
    let entry = JournalEntry::decode(proof.entry.as_slice())
        .map_err(|e| format!("its entry is not a journal entry: {e}"))?;
    Ok((proof, entry))
}

fn merged_is(stored: &kiroku_proto::StoredEvent, json: &serde_json::Value) -> bool {
    trust::merged(stored)
        .ok()
        .and_then(|ev| serde_json::to_value(ev).ok())
        .is_some_and(|v| &v == json)
}

/// The proof against the checkpoint it names.
fn prove(
    e: &ManifestEvent,
    proof: &InclusionProof,
    checkpoints: &BTreeMap<u64, Checkpoint>,
    r: &mut Report,
) {
    let Some(n) = e.checkpoint else {
        // Covered by the manifest signature only; the manifest says why.
        return;
    };
    let Some(c) = checkpoints.get(&n) else {
        return r.find(
            "bad_proof",
            &e.proof,
            format!("checkpoint {n} is not in the bundle or did not verify"),
        );
    };
    match trust::check_proof(proof, c) {
        Ok(()) => r.proven += 1,
        Err(why) => r.find("bad_proof", &e.proof, why),
    }
}

/// The audit entries: each one's hash over its own fields, and the
/// export's own entry among them.
fn audit(dir: &Path, m: &Manifest, hashes: &BTreeMap<String, String>, r: &mut Report) {
    let Some(bytes) = verified(dir, layout::AUDIT, hashes, r) else {
        return;
    };
    let mut own = false;
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let Some(e) = trust::audit_entry(line) else {
            r.find(
                "bad_audit",
                layout::AUDIT,
                format!("line {} is not an audit entry", i + 1),
            );
            continue;
        };
        r.audit_entries += 1;
        if trust::audit_hash(&e) != e.hash {
            r.find(
                "bad_audit",
                layout::AUDIT,
                format!("entry seq {} does not hash to its own hash", e.seq),
            );
        }
        own |= e.seq == m.audit_seq && e.hash == m.audit_hash;
    }
    if !own {
        r.find(
            "bad_audit",
            layout::AUDIT,
            format!("the export's own entry (seq {}) is not there", m.audit_seq),
        );
    }
}

/// A listed file whose hash matched, read whole.
fn verified(
    dir: &Path,
    path: &str,
    hashes: &BTreeMap<String, String>,
    r: &mut Report,
) -> Option<Vec<u8>> {
    if path.is_empty() || !hashes.contains_key(path) {
        return None;
    }
    read_small(dir, path, r)
}

fn read_small(dir: &Path, path: &str, r: &mut Report) -> Option<Vec<u8>> {
    let mut data = Vec::new();
    let read = std::fs::File::open(dir.join(path))
        .and_then(|f| f.take(MAX_READ + 1).read_to_end(&mut data));
    match read {
        Ok(_) if data.len() as u64 > MAX_READ => {
            r.find(
                "bad_manifest",
                path,
                "larger than 64 MiB; not a file a bundle holds",
            );
            None
        }
        Ok(_) => Some(data),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // The file walk reports missing files once.
            None
        }
        Err(e) => {
            r.find("missing", path, format!("cannot be read: {e}"));
            None
        }
    }
}

fn hash_file(p: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        match f.read(&mut buf)? {
            0 => return Ok((hex::encode(h.finalize()), n)),
            k => {
                h.update(&buf[..k]);
                n += k as u64;
            }
        }
    }
}

/// The DER of the one certificate in a PEM file.
pub fn pem_to_der(pem: &[u8]) -> Result<Vec<u8>, String> {
    let (_, p) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not a PEM certificate: {e}"))?;
    if p.label != "CERTIFICATE" {
        return Err(format!("a PEM {}, not a CERTIFICATE", p.label));
    }
    Ok(p.contents)
}
