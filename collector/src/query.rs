//! The Query service for investigators: search with filters (newest first,
//! paged or streamed), one event, the original message, known hosts, a
//! hash's trace, alerts (replay and live) and the exfiltration report (its
//! totals and newest files, or every file streamed) and counts of the
//! events a filter matches, grouped (Aggregate). Every call is
//! recorded in the audit log (`store/audit.rs`) with the caller's
//! identity, the filter and the result count before it is answered, and
//! so is every request refused as invalid (with why). A streamed call's
//! count is what matched when the stream began; a followed alert stream
//! records a second entry with what it sent when it ends.
//!
//! Invariant: no request field reaches a parser unbounded (search limits
//! in `store/index/limits.rs`), no error message echoes a whole input
//! (`kiroku_common::quote`), and raw content is checked against its hash
//! while it streams: the last chunk is sent only after the check passed.
//!
//! The service is one struct (here) and one concept per file: what the
//! audit log records of a call (`audit.rs`), a request's arguments checked
//! and bounded and index errors turned into statuses (`args.rs`), GetRaw's
//! content streamed and checked against its hash (`raw.rs`), and the
//! `Query` calls themselves (`service.rs`).

mod args;
mod audit;
mod raw;
mod service;

use std::sync::Arc;

use tonic::Status;

use crate::alerts::Alerting;
use crate::store::Store;

pub use args::{aggregate_args, page_of, trace_args};
pub(crate) use args::{event_id_arg, index_status};
pub(crate) use audit::{audit_entry, refuse_entry};
pub(crate) use service::{ExportStream, VerifyStream};

pub struct QueryService {
    store: Arc<Store>,
    alerting: Arc<Alerting>,
    tls_status: Arc<dyn Fn() -> (String, bool) + Send + Sync>,
    /// The CA certificate (PEM): what `Verify` checks checkpoint signers
    /// against.
    ca_pem: Arc<Vec<u8>>,
    /// The TSA's CA certificate (PEM), when checkpoints are time-stamped.
    tsa_ca: Option<Arc<Vec<u8>>>,
    /// The collector's signing key (case bundles); None: unsigned.
    signer: Option<Arc<crate::integrity::signing::Signer>>,
}

impl QueryService {
    pub fn new(store: Arc<Store>, alerting: Arc<Alerting>) -> Self {
        QueryService {
            store,
            alerting,
            tls_status: Arc::new(|| (String::new(), false)),
            signer: None,
            ca_pem: Arc::default(),
            tsa_ca: None,
        }
    }

    /// The key case bundles are signed with (`[checkpoint]
    /// signing_cert/signing_key`, the checkpoints' key).
    pub fn with_signer(mut self, signer: Option<Arc<crate::integrity::signing::Signer>>) -> Self {
        self.signer = signer;
        self
    }

    /// The signing key, for the calls of `integrity/rpc.rs`.
    pub(crate) fn signer(&self) -> Option<&Arc<crate::integrity::signing::Signer>> {
        self.signer.as_ref()
    }

    /// The CA certificate (PEM) checkpoint signatures are checked against,
    /// and the TSA's CA certificate their time stamps are.
    pub fn with_ca_pem(mut self, pem: Vec<u8>, tsa_ca: Option<Vec<u8>>) -> Self {
        self.ca_pem = Arc::new(pem);
        self.tsa_ca = tsa_ca.map(Arc::new);
        self
    }

    pub(crate) fn tsa_ca(&self) -> Option<Arc<Vec<u8>>> {
        self.tsa_ca.clone()
    }

    pub(crate) fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub(crate) fn ca_pem(&self) -> Arc<Vec<u8>> {
        self.ca_pem.clone()
    }

    /// What `ListHosts` says about the revocation list: its description
    /// and whether it has expired (see `listener::TlsSource::crl_status`).
    pub fn with_tls_status(mut self, f: Arc<dyn Fn() -> (String, bool) + Send + Sync>) -> Self {
        self.tls_status = f;
        self
    }
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
    }
}
