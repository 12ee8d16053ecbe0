//! What the offline check of a bundle trusts, in one place: signatures
//! and checkpoints checked against the CA (`integrity::signing`,
//! `integrity::check_checkpoint`), RFC 6962 inclusion proofs
//! (`integrity::merkle`), and the merged view of a stored event
//! (`store::journal`). The bundle code calls only these.

use kiroku_proto::{Checkpoint, Event, SignedCheckpoint, StoredEvent};
use prost::Message;

use crate::integrity::{merkle, signing};

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
/// certificate valid when it was written): its content.
pub fn check_checkpoint(signed: &SignedCheckpoint, ca_pem: &[u8]) -> Result<Checkpoint, String> {
    let c = Checkpoint::decode(signed.checkpoint.as_slice())
        .map_err(|e| format!("not a checkpoint: {e}"))?;
    if signed.signature.is_empty() {
        return Err(format!(
            "checkpoint {} is unsigned ({})",
            c.number, signed.unsigned_reason
        ));
    }
    verify_signature(
        &signed.checkpoint,
        &signed.signature,
        &signed.signer_cert_der,
        ca_pem,
        c.at_ms,
    )?;
    Ok(c)
}

/// Whether `proof` leads from the leaf hash of `entry` (leaf `index` of a
/// tree of `size` leaves) to `root`.
pub fn inclusion_ok(entry: &[u8], index: u64, size: u64, proof: &[Vec<u8>], root: &[u8]) -> bool {
    let hash = |b: &[u8]| merkle::Hash::try_from(b).ok();
    let (Some(path), Some(root)) = (
        proof.iter().map(|p| hash(p)).collect::<Option<Vec<_>>>(),
        hash(root),
    ) else {
        return false;
    };
    merkle::verify_inclusion(&merkle::leaf_hash(entry), index, size, &path, &root).is_ok()
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
