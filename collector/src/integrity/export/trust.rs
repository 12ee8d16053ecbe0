//! What the offline check of a bundle trusts, in one place: signatures
//! and checkpoints checked against the CA (`integrity::signing`,
//! `integrity::check_checkpoint`), RFC 6962 inclusion proofs
//! (`integrity::merkle`), and the merged view of a stored event
//! (`store::journal`). The bundle code calls only these.

use kiroku_proto::{Checkpoint, Event, InclusionProof, SignedCheckpoint, StoredEvent};

use crate::integrity::{check, signing};

/// Checks `sig` over `data` with the certificate `cert_der`, which must
/// chain to the CA in `ca_pem`, carry the signer role and have been valid
/// at `at_ms` (when the signed object says it was signed). Returns the
/// signer's identity (`signer/<name>`).
pub fn verify_signature(
    data: &[u8],
    sig: &[u8],
    cert_der: &[u8],
    ca_pem: &[u8],
    at_ms: i64,
) -> Result<String, String> {
    signing::verify_at(data, sig, cert_der, ca_pem, Some(at_ms))
        .map(|id| id.to_string())
        .map_err(|e| e.to_string())
}

/// A signed checkpoint checked against the CA (signature by a signer
/// certificate valid when it was written) and, with `tsa_ca`, its RFC 3161
/// time stamp: its content, and whether a time stamp went unchecked for
/// want of a TSA CA.
pub fn check_checkpoint(
    signed: &SignedCheckpoint,
    ca_pem: &[u8],
    tsa_ca: Option<&[u8]>,
) -> Result<(Checkpoint, bool), String> {
    check::inspect_checkpoint(signed, ca_pem, tsa_ca)
        .map(|c| (c.checkpoint, c.timestamp_unchecked))
        .map_err(|e| e.to_string())
}

/// Whether `proof` (its entry and audit path) leads to `checkpoint`'s
/// signed Merkle root.
pub fn check_proof(proof: &InclusionProof, checkpoint: &Checkpoint) -> Result<(), String> {
    check::check_proof(proof, checkpoint)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The event as search serves it: the agent's bytes with the collector's
/// additions over them.
pub fn merged(stored: &StoredEvent) -> Result<Event, String> {
    crate::store::journal::merged(stored).map_err(|e| e.to_string())
}

/// One line of the audit log (`audit.log`, and `audit/entries.jsonl` of a
/// bundle, which holds the log's lines verbatim).
pub fn audit_entry(line: &[u8]) -> Option<kiroku_proto::AuditEntry> {
    crate::store::audit::parse_line(line)
}

/// The hash an audit entry must carry (over its own fields and the
/// previous entry's hash).
pub fn audit_hash(e: &kiroku_proto::AuditEntry) -> String {
    crate::store::audit::entry_hash(e)
}
