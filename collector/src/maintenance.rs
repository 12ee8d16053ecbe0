//! The maintenance window (issue 19): a daily run that verifies, repairs
//! what is safe online, marks and purges expired events, resumes where it
//! stopped, and ends with a summary to the administrators.

pub mod rpc;
