//! What the offline check of a bundle trusts, in one place: signatures
//! and checkpoints checked against the CA (`integrity::signing`,
//! `integrity::check_checkpoint`), RFC 6962 inclusion proofs
//! (`integrity::merkle`), and the merged view of a stored event
//! (`store::journal`). The bundle code calls only these.

use kiroku_proto::{Checkpoint, Event, SignedCheckpoint, StoredEvent};

/// Checks `sig` over `data` with the certificate `cert_der`, which must
/// chain to the CA in `ca_pem` and carry the signer role. Returns the
/// signer's name.
pub fn verify_signature(
    data: &[u8],
    sig: &[u8],
    cert_der: &[u8],
    ca_pem: &[u8],
) -> Result<String, String> {
    let _ = (data, sig, cert_der, ca_pem);
    Err("signature checks are not in this build yet".into())
}

/// A signed checkpoint checked against the CA (signature, signer role,
/// time stamp when present): its content.
pub fn check_checkpoint(signed: &SignedCheckpoint, ca_pem: &[u8]) -> Result<Checkpoint, String> {
    let _ = (signed, ca_pem);
    Err("checkpoint checks are not in this build yet".into())
}

/// Whether `proof` leads from the leaf hash of `entry` (leaf `index` of a
/// tree of `size` leaves) to `root`.
pub fn inclusion_ok(entry: &[u8], index: u64, size: u64, proof: &[Vec<u8>], root: &[u8]) -> bool {
    let _ = (entry, index, size, proof, root);
    false
}

/// The event as search serves it: the agent's bytes with the collector's
/// additions over them.
pub fn merged(stored: &StoredEvent) -> Result<Event, String> {
    let _ = stored;
    Err("the merged view is not in this build yet".into())
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
