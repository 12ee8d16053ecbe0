//! Where each file of a case bundle lives, and which relative paths a
//! bundle may hold at all. The collector names the files; the CLI that
//! writes them and the offline check that reads them both accept only the
//! paths [`check_path`] accepts, so a bundle (or a hostile server) can
//! never make the writer leave its directory.
//!
//! Invariant: every path [`event_path`] builds passes [`check_path`], and
//! two different event ids never share a path (the encoding is
//! reversible).

use std::fmt::Write as _;

/// The signed manifest (JSON) and its signature.
pub const MANIFEST: &str = "manifest.json";
pub const MANIFEST_SIG: &str = "manifest.sig";
/// `sha256sum` lines of every other file, and their signature.
pub const SUMS: &str = "SHA256SUMS";
pub const SUMS_SIG: &str = "SHA256SUMS.sig";
/// The certificate of the key that signed the manifest (PEM).
pub const SIGNER_PEM: &str = "ca-chain/signer.pem";
/// How to check the bundle, for whoever receives it.
pub const README: &str = "README.txt";
/// The audit entries of who searched for and exported these events.
pub const AUDIT: &str = "audit/entries.jsonl";

/// The files that are not listed in the manifest's file list: the
/// manifest itself, `SHA256SUMS` (which lists the manifest) and the two
/// signatures.
pub const CONTROL_FILES: [&str; 4] = [MANIFEST, MANIFEST_SIG, SUMS, SUMS_SIG];

/// Longest relative path accepted (bytes).
pub const MAX_PATH: usize = 1024;
/// Deepest nesting accepted (components).
pub const MAX_DEPTH: usize = 8;

/// The files of one event, by what they hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFile {
    /// The merged view as JSON (what search and `kiroku show` serve).
    Json,
    /// The agent's encoded `Event`, byte for byte.
    Recorded,
    /// The collector's encoded `Additions`.
    Additions,
    /// The encoded `InclusionProof` (with the journal entry's bytes).
    Proof,
    /// The raw message.
    Mail,
}

impl EventFile {
    fn dir_and_ext(self) -> (&'static str, &'static str) {
        match self {
            EventFile::Json => ("events", "json"),
            EventFile::Recorded => ("recorded", "pb"),
            EventFile::Additions => ("additions", "pb"),
            EventFile::Proof => ("proofs", "pb"),
            EventFile::Mail => ("mail", "eml"),
        }
    }
}

/// The path of one of an event's files: the event id's `/`-separated parts
/// (agent, stream, sequence number) as directories, each part
/// percent-encoded outside `[A-Za-z0-9_-]` and `.` not leading, so no part
/// can be empty, `.`, `..` or hidden; e.g. `events/host-1/smtp/42.json`.
pub fn event_path(event_id: &str, file: EventFile) -> String {
    let (dir, ext) = file.dir_and_ext();
    let mut p = String::from(dir);
    for part in event_id.split('/') {
        p.push('/');
        p.push_str(&encode_part(part));
    }
    p.push('.');
    p.push_str(ext);
    p
}

/// The files of checkpoint `n`: the encoded `SignedCheckpoint`, and its
/// parts for `openssl` (the signed bytes, the DER signature, the signer's
/// DER certificate, the RFC 3161 token).
pub fn checkpoint_path(n: u64, ext: &str) -> String {
    format!("checkpoints/{n:020}.{ext}")
}

fn encode_part(part: &str) -> String {
    if part.is_empty() {
        return "%".into();
    }
    let mut out = String::with_capacity(part.len());
    for (i, b) in part.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0);
        if plain {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bundle path {path}: {why}")]
pub struct PathError {
    /// The path, quoted and cut for messages.
    pub path: String,
    pub why: &'static str,
}

/// Checks a relative bundle path: `/`-separated, at most [`MAX_PATH`]
/// bytes and [`MAX_DEPTH`] parts, each part of printable ASCII without
/// `\`, not empty, not `.` or `..`, not starting with `.`. Stricter than
/// any path the collector makes, so a writer that checks it cannot be led
/// outside its directory or onto a hidden or special name.
pub fn check_path(path: &str) -> Result<(), PathError> {
    let refuse = |why| PathError {
        path: kiroku_common::quote::quote_clipped(path, 120),
        why,
    };
    if path.is_empty() {
        return Err(refuse("empty"));
    }
    if path.len() > MAX_PATH {
        return Err(refuse("longer than 1024 bytes"));
    }
    if path.starts_with('/') {
        return Err(refuse("absolute"));
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() > MAX_DEPTH {
        return Err(refuse("nested deeper than 8 directories"));
    }
    for part in parts {
        if part.is_empty() {
            return Err(refuse("has an empty part (//, or a trailing /)"));
        }
        if part == "." || part == ".." {
            return Err(refuse("has a . or .. part"));
        }
        if part.starts_with('.') {
            return Err(refuse("has a hidden (dot) part"));
        }
        if !part.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
            return Err(refuse(
                "has a character outside printable ASCII (or a backslash)",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_paths() {
        for (id, want) in [
            ("host-1/smtp/42", "events/host-1/smtp/42.json"),
            ("a.b/files/7", "events/a.b/files/7.json"),
            ("../x/1", "events/%2E./x/1.json"),
            ("a//1", "events/a/%/1.json"),
            (".hidden/s/1", "events/%2Ehidden/s/1.json"),
            ("ü/s/1", "events/%C3%BC/s/1.json"),
            ("a\\b/s/1", "events/a%5Cb/s/1.json"),
            ("a%2F/s/1", "events/a%252F/s/1.json"),
        ] {
            let p = event_path(id, EventFile::Json);
            assert_eq!(p, want, "{id}");
            check_path(&p).expect(id);
        }
        assert_eq!(event_path("h/s/1", EventFile::Mail), "mail/h/s/1.eml");
        assert_eq!(
            checkpoint_path(3, "sig"),
            "checkpoints/00000000000000000003.sig"
        );
    }

    #[test]
    fn distinct_ids_distinct_paths() {
        let ids = [
            "a/b/1", "a%2Fb/1", "a/b%2F1", "a.b/1", "a/.b/1", "a/%2Eb/1", "a//1", "a/%/1",
        ];
        let paths: std::collections::HashSet<_> =
            ids.iter().map(|i| event_path(i, EventFile::Json)).collect();
        assert_eq!(paths.len(), ids.len());
    }

    #[test]
    fn refused_paths() {
        for (p, why) in [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("a/../../x", ". or .."),
            ("./a", ". or .."),
            ("a//b", "empty part"),
            ("a/", "empty part"),
            (".ssh/authorized_keys", "hidden"),
            ("a\\..\\b", "backslash"),
            ("a b", "printable"),
            ("a\0b", "printable"),
            ("é", "printable"),
            ("a/b/c/d/e/f/g/h/i", "deeper"),
        ] {
            let e = check_path(p).expect_err(p);
            assert!(e.to_string().contains(why), "{p}: {e}");
        }
        check_path(&"a".repeat(MAX_PATH + 1)).expect_err("long");
        for ok in [
            "manifest.json",
            "events/h/s/1.json",
            "checkpoints/1.ckp",
            "a-b_c.d/e%2E",
        ] {
            check_path(ok).expect(ok);
        }
    }
}
