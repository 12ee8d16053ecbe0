//! Evidence integrity (issue 18): the chains of custody from the agent's
//! buffer to a case export, and what checks them.
//!
//! - `merkle.rs` — RFC 6962 tree hashes and inclusion proofs (pure).
//! - `signing.rs` — the collector's checkpoint signing key and the
//!   verification of a signature against the CA (rotation: any signer
//!   certificate the CA issued verifies).
//! - `tsa.rs` — RFC 3161 time-stamp requests and token verification.
//! - `checkpoint.rs` — the checkpoint writer (every `checkpoint.interval`);
//!   `checkpoint/ledger.rs` where each checkpoint is (files and the
//!   covered journal range in the metadata), `checkpoint/build.rs` the
//!   journal range read as one tree.
//! - `check.rs` — one signed checkpoint checked with the CA alone, and a
//!   proof against it (verify, verify-bundle, `kiroku checkpoint check`).
//! - `proof.rs` — inclusion proofs of stored events (`GetProof`, export).
//! - `verify.rs` — `kiroku verify`: journal chain, agent stream chains,
//!   checkpoints, blobs, index against journal, audit log.
//! - `export.rs` — case bundles and their offline check.
//! - `rpc.rs` — the Query calls `Verify`, `ExportCase`, `GetProof`.

pub mod check;
pub mod checkpoint;
pub mod export;
pub mod merkle;
pub mod proof;
pub mod rpc;
pub mod signing;
pub mod tsa;
pub mod verify;

pub use check::{Problem, check_checkpoint};
