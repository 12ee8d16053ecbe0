//! Capture sources: each turns something that happens on the host into
//! events in the buffer. They never wait on the collector.

pub mod context;
pub mod files;
pub mod host;
pub mod mtalog;
pub mod network;
pub mod smtp;
