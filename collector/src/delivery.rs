//! Issue 20. A relayed mail's downstream fate: the upstream MTA's own log
//! (MtaLogEvent records shipped by the agent on the MTA host) joined to
//! the relay's EmailEvent by (MTA host, queue id, time window) and the
//! Message-ID, kept beside the event as a `Delivery` (never an edit of the
//! event), served by `GetDelivery` and filtered by `--delivery`.

pub mod join;
pub mod rpc;
pub mod store;

pub use store::{DeliveryError, DeliveryStore};

use crate::store::index::DerivedSource;

/// A mail with no MTA log line joined (the index's value, `--delivery
/// unknown`).
pub const UNKNOWN: &str = "unknown";
/// The values of `Delivery.status` and of the `--delivery` filter.
pub const STATUSES: [&str; 5] = ["delivered", "deferred", "bounced", "expired", UNKNOWN];

/// The index's derived fields with the mail's delivery status added:
/// whatever adds a mail to the index (ingest, the re-index after a join,
/// analysis, a rebuild) takes the status the store holds.
pub fn derived_source(analysis: DerivedSource, deliveries: DeliveryStore) -> DerivedSource {
    std::sync::Arc::new(move |e: &kiroku_proto::Event| {
        let mut d = analysis(e);
        if matches!(e.kind, Some(kiroku_proto::event::Kind::Email(_)))
            && let Some(status) = deliveries.status(&e.event_id)
        {
            d.get_or_insert_with(Default::default).delivery = status;
        }
        d
    })
}

#[cfg(test)]
mod tests;
