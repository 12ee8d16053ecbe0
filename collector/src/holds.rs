//! Legal holds (issue 19): a case's search filter whose events and blobs
//! are never purged while the hold is in force.

pub mod rpc;
