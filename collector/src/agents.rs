//! Agents as accounts (issue 19): the agents' issuing CA the collector
//! holds, retiring an agent (revocation through that CA's list), and
//! silent agents.

pub mod rpc;
