//! The check of one signed checkpoint with the CA certificate alone (and
//! the TSA's CA for its time stamp): what `verify`, `verify-bundle` and
//! `kiroku checkpoint check` share. Pure: no store, no network.

use kiroku_common::pki::PeerIdentity;
use kiroku_proto::{Checkpoint, InclusionProof, JournalEntry, SignedCheckpoint};
use prost::Message;

use super::merkle::{self, ProofError};
use super::signing::{self, SignatureError};
use super::tsa::{self, TimeStamp, TimestampError};

/// Why a checkpoint does not hold. [`Problem::finding`] is the word
/// `verify` reports it under.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    #[error("the checkpoint bytes do not decode: {0}")]
    Malformed(String),
    /// Written by a collector without a signing key: its content may be
    /// used, but it proves nothing against someone who can write the data
    /// directory.
    #[error("checkpoint {} is UNSIGNED: {reason}", checkpoint.number)]
    Unsigned {
        reason: String,
        checkpoint: Box<Checkpoint>,
    },
    #[error("checkpoint signature: {0}")]
    Signature(SignatureError),
    #[error("checkpoint time stamp: {0}")]
    Timestamp(TimestampError),
}

impl Problem {
    /// The `VerifyFinding.what` of this problem.
    pub fn finding(&self) -> &'static str {
        match self {
            Problem::Malformed(_) => "altered",
            Problem::Unsigned { .. } => "unsigned",
            Problem::Signature(e) => e.finding(),
            Problem::Timestamp(_) => "bad_timestamp",
        }
    }

    /// Whether this counts as an alteration (an unsigned checkpoint is a
    /// weakness the operator chose, reported but not as tampering).
    pub fn is_alteration(&self) -> bool {
        !matches!(self, Problem::Unsigned { .. })
    }
}

/// What a checkpoint that holds says, and who vouches for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub checkpoint: Checkpoint,
    /// `signer/<name>` from its certificate.
    pub signer: PeerIdentity,
    /// The RFC 3161 time stamp, when there is one and a TSA CA to check it
    /// against was given.
    pub timestamp: Option<TimeStamp>,
    /// A time stamp is present but no TSA CA was given to check it.
    pub timestamp_unchecked: bool,
}

/// How far a checkpoint's own time may be from its time stamp's: the
/// writer asks a TSA right after making it (a request times out in 20 s),
/// and clocks of the collector and the TSA may differ by a few minutes.
pub const STAMP_TOLERANCE_MS: i64 = 10 * 60 * 1000;

/// Checks `signed`: the signature by a signer certificate `ca_pem` issued
/// (valid at the checkpoint's time), and, with `tsa_ca`, the time stamp
/// over exactly the checkpoint bytes. Returns the checkpoint.
pub fn check_checkpoint(
    signed: &SignedCheckpoint,
    ca_pem: &[u8],
    tsa_ca: Option<&[u8]>,
) -> Result<Checkpoint, Problem> {
    inspect_checkpoint(signed, ca_pem, tsa_ca).map(|c| c.checkpoint)
}

/// [`check_checkpoint`], with the signer and the time stamp.
pub fn inspect_checkpoint(
    signed: &SignedCheckpoint,
    ca_pem: &[u8],
    tsa_ca: Option<&[u8]>,
) -> Result<Checked, Problem> {
    let checkpoint = Checkpoint::decode(signed.checkpoint.as_slice())
        .map_err(|e| Problem::Malformed(e.to_string()))?;
    if signed.signature.is_empty() {
        let reason = if signed.unsigned_reason.is_empty() {
            "no signature".to_owned()
        } else {
            signed.unsigned_reason.clone()
        };
        return Err(Problem::Unsigned {
            reason,
            checkpoint: Box::new(checkpoint),
        });
    }
    let signer = signing::verify_at(
        &signed.checkpoint,
        &signed.signature,
        &signed.signer_cert_der,
        ca_pem,
        Some(checkpoint.at_ms),
    )
    .map_err(Problem::Signature)?;
    let (timestamp, timestamp_unchecked) = match (signed.timestamp_token.is_empty(), tsa_ca) {
        (true, _) => (None, false),
        (false, None) => (None, true),
        (false, Some(ca)) => {
            let ts = tsa::verify_token(&signed.timestamp_token, &signed.checkpoint, ca)
                .map_err(Problem::Timestamp)?;
            // The signer's certificate is judged at the checkpoint's own
            // time; the time stamp is what proves that time, so the two
            // must agree (the writer asks for the stamp as soon as the
            // checkpoint is made). Otherwise a leaked, expired key could
            // sign a backdated checkpoint and get a genuine fresh stamp.
            if (ts.at_ms - checkpoint.at_ms).abs() > STAMP_TOLERANCE_MS {
                return Err(Problem::Timestamp(tsa::TimestampError::TimeMismatch {
                    claimed_ms: checkpoint.at_ms,
                    stamped_ms: ts.at_ms,
                    tolerance_ms: STAMP_TOLERANCE_MS,
                }));
            }
            (Some(ts), false)
        }
    };
    Ok(Checked {
        checkpoint,
        signer,
        timestamp,
        timestamp_unchecked,
    })
}

/// Why an inclusion proof does not hold for a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofProblem {
    #[error("the proof is for checkpoint {proof}, not {checkpoint}")]
    OtherCheckpoint { proof: u64, checkpoint: u64 },
    #[error("leaf {leaf} is not among checkpoint {checkpoint}'s leaves {first}..{end}")]
    NotCovered {
        leaf: u64,
        checkpoint: u64,
        first: u64,
        end: u64,
    },
    #[error("the proof's journal entry does not decode or is not leaf {0}")]
    Entry(u64),
    #[error(transparent)]
    Path(#[from] ProofError),
}

/// Checks that `proof.entry` is leaf `proof.leaf` of `checkpoint`'s tree
/// (a checkpoint that was itself checked with [`check_checkpoint`]).
/// Returns the decoded entry.
pub fn check_proof(
    proof: &InclusionProof,
    checkpoint: &Checkpoint,
) -> Result<JournalEntry, ProofProblem> {
    if proof.checkpoint != checkpoint.number {
        return Err(ProofProblem::OtherCheckpoint {
            proof: proof.checkpoint,
            checkpoint: checkpoint.number,
        });
    }
    let (first, end) = (
        checkpoint.first_leaf,
        checkpoint.first_leaf.saturating_add(checkpoint.leaves),
    );
    if proof.leaf < first || proof.leaf >= end {
        return Err(ProofProblem::NotCovered {
            leaf: proof.leaf,
            checkpoint: checkpoint.number,
            first,
            end,
        });
    }
    let entry = JournalEntry::decode(proof.entry.as_slice())
        .ok()
        .filter(|e| e.leaf == proof.leaf)
        .ok_or(ProofProblem::Entry(proof.leaf))?;
    let path: Vec<merkle::Hash> = proof
        .path
        .iter()
        .map(|h| <merkle::Hash>::try_from(h.as_slice()))
        .collect::<Result<_, _>>()
        .map_err(|_| {
            ProofProblem::Path(ProofError::WrongLength {
                index: proof.leaf - first,
                size: checkpoint.leaves,
                got: proof.path.len(),
            })
        })?;
    let root = <merkle::Hash>::try_from(checkpoint.merkle_root.as_slice()).map_err(|_| {
        ProofProblem::Path(ProofError::RootMismatch {
            got: String::new(),
            want: hex::encode(&checkpoint.merkle_root),
        })
    })?;
    merkle::verify_inclusion(
        &merkle::leaf_hash(&proof.entry),
        proof.leaf - first,
        checkpoint.leaves,
        &path,
        &root,
    )?;
    Ok(entry)
}
