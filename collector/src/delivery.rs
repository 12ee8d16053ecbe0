//! Issue 20. A relayed mail's downstream fate: the upstream MTA's own log
//! (MtaLogEvent records shipped by the agent on the MTA host) joined to
//! the relay's EmailEvent by (MTA host, queue id, time window) and the
//! Message-ID, kept beside the event as a `Delivery` (never an edit of the
//! event), served by `GetDelivery` and filtered by `--delivery`.

pub mod join;
pub mod rpc;
pub mod store;

pub use store::{DeliveryError, DeliveryStore};
