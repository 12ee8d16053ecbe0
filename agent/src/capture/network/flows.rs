//! The flow table (issue 21): socket dumps and destroy notifications in,
//! `NetworkEvent` records out. See `flows/table.rs` for the life of a
//! flow, `coalesce.rs` for summaries and the rate limit, `exclude.rs` for
//! what is never recorded, `persist.rs` for the state that lets a
//! restarted agent continue a flow.

pub mod coalesce;
pub mod exclude;
pub mod infer;
pub mod persist;
mod record;
pub mod table;

pub use exclude::Excluder;
pub use persist::{STATE, Saved, StateOp};
pub use table::{FlowTable, Rec, Stats};

#[cfg(test)]
mod tests;
