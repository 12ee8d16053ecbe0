//! Kiroku collector: the Ingest service (`ingest`), the Query service
//! (`query`), authorisation by certificate role (`auth`), and the embedded
//! store (`store`: blobs, index, metadata), served by `server`; alert
//! rules and notifiers (`alerts`); trace and exfiltration report
//! (`investigate`).
//!
//! Architecture invariant: nothing is acknowledged to an agent before it is
//! durable; callers are identified only by their client certificate.

pub mod admin;
pub mod agents;
pub mod alerts;
pub mod analysis;
pub mod auth;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod enroll;
pub mod holds;
pub mod ingest;
pub mod integrity;
pub mod investigate;
pub mod listener;
pub mod maintenance;
pub mod network;
pub mod query;
pub mod retention;
pub mod server;
pub mod store;
pub mod test_hooks;

pub use config::CollectorConfig;

pub use kiroku_common::shutdown_signal;
