//! Case bundles: the events a search selects, exported with everything a
//! third party needs to check them offline with the CA certificate alone
//! (`kiroku export --case NAME`, `kiroku verify-bundle DIR --ca ca.pem`).
//! The collector builds a bundle's files and streams them (`ExportCase`);
//! nothing of it is kept on the collector's disk. This documentation is
//! the bundle's specification.
//!
//! # Layout (format `kiroku-case-bundle/1`)
//!
//! ```text
//! README.txt                     how to check the bundle, for whoever receives it
//! manifest.json                  case, reason, filter, exporter, collector, time, the
//!                                export's audit entry, every event and its files, the
//!                                checkpoints, and the SHA-256 + size of every file
//! manifest.sig                   signature of manifest.json (collector signing key)
//! SHA256SUMS                     `sha256sum` lines of every file + manifest.json
//! SHA256SUMS.sig                 signature of SHA256SUMS
//! ca-chain/signer.pem            the certificate of the signing key (role signer)
//! events/<id>.json               the event as search serves it (merged view), JSON
//! recorded/<id>.pb               the agent's encoded Event, byte for byte
//! additions/<id>.pb              the collector's encoded Additions
//! proofs/<id>.pb                 encoded InclusionProof: the journal entry's bytes and
//!                                the RFC 6962 audit path to a checkpoint's root
//! mail/<id>.eml                  the raw message, byte-identical
//! checkpoints/<n>.ckp            encoded SignedCheckpoint, and its parts for openssl:
//! checkpoints/<n>.bin            the signed Checkpoint bytes,
//! checkpoints/<n>.sig            the DER signature, <n>.der the signer's certificate,
//! checkpoints/<n>.tsr            the RFC 3161 token (when time-stamped)
//! audit/entries.jsonl            audit log lines, verbatim (see below)
//! ```
//!
//! `<id>` is the event id (`agent/stream/seq`) with each part
//! percent-encoded outside `[A-Za-z0-9_.-]` (`layout::event_path`).
//!
//! # What proves what
//!
//! - The manifest signature (ECDSA P-256/SHA-256 by a certificate the CA
//!   issued with the signer role) covers every file through its hash:
//!   editing a file and the manifest to match breaks the signature.
//!   `SHA256SUMS` repeats the list in `sha256sum` form, signed too, so
//!   `openssl` and `sha256sum -c` check a bundle without Kiroku.
//! - For each event with a journal leaf: the proof's entry holds exactly
//!   `recorded/` and `additions/`; SHA-256 of `recorded/` is
//!   `additions.recorded_sha256` (the agent's stream chain links by that
//!   hash); the audit path leads from SHA-256(0x00 || entry) to the
//!   Merkle root of a checkpoint signed (and maybe time-stamped) when it
//!   was written, independently of this export; `events/` is the merged
//!   view of those bytes; `mail/` hashes to the event's `raw_sha256`.
//! - An event newer than the newest checkpoint has no proof yet (the
//!   manifest notes it); events stored before the journal was chained
//!   (`KRJ1`) have no leaf. Both are covered by the manifest signature only.
//!
//! # Audit entries in the bundle
//!
//! `audit/entries.jsonl` holds, verbatim and in log order, the audit log
//! lines up to and including the export's own entry that concern the
//! exported events (`audit_select.rs`):
//! - the export's own entry (admin, call `ExportCase`), written before the
//!   bundle is built;
//! - every entry whose filter or detail names an exported event by its id
//!   (`GetEvent`, `GetRaw`, `GetAnnotations`, `GetProof`, ...);
//! - every entry whose filter or detail holds a SHA-256 of an exported
//!   event's content (raw message, attachment, file): `Trace`, searches by
//!   `--sha256`;
//! - every entry holding a search (`Search`, `SearchStream`, `Aggregate`,
//!   `ExportCase`) with the same filter values as this export's, apart
//!   from time range and paging, whose time range includes an exported
//!   event.
//!
//! Each line keeps its own hash and its predecessor's: its content is
//! checkable alone; the chain between lines is checked on the collector
//! (`kiroku verify`, `kiroku audit`), whose checkpoints sign its head.

mod audit_select;
pub mod build;
pub mod check;
mod evidence;
pub mod layout;
pub mod manifest;
pub mod sink;
mod trust;

pub use build::{Case, Exporter, build};
pub use check::{Finding, Report, check_bundle};

/// Why an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The client went away; nothing to report to it.
    #[error("the client went away")]
    Gone,
    #[error("reading {what}: {error}")]
    Read { what: String, error: String },
    #[error("the search failed: {0}")]
    Search(#[from] crate::store::index::IndexError),
    #[error("the search matches {0} events; a bundle holds at most {max}: narrow it (a time range) and export the case in parts", max = build::MAX_EVENTS)]
    TooMany(u64),
    #[error("signing the manifest: {0}")]
    Sign(String),
    #[error("{0}")]
    Internal(String),
}

#[cfg(test)]
mod tests;
