//! Evidence integrity (issue 18): the chains of custody from the agent's
//! buffer to a case export, and what checks them.
//!
//! - `merkle.rs` — RFC 6962 tree hashes and inclusion proofs (pure).
//! - `signing.rs` — the collector's checkpoint signing key and the
//!   verification of a signature against the CA (rotation: any signer
//!   certificate the CA issued verifies).
//! - `tsa.rs` — RFC 3161 time-stamp requests and token verification.
//! - `checkpoint.rs` — the checkpoint writer (every `checkpoint.interval`).
//! - `verify.rs` — `kiroku verify`: journal chain, agent stream chains,
//!   checkpoints, blobs, index against journal, audit log.
//! - `export.rs` — case bundles and their offline check.
//! - `rpc.rs` — the Query calls `Verify`, `ExportCase`, `GetProof`.

pub mod export;
pub mod merkle;
pub mod rpc;
pub mod signing;
pub mod tsa;
