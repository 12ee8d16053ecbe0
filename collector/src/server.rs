//! Wires the collector together: opens the store, starts the committer,
//! and serves Ingest, Query, gRPC health and server reflection on one mTLS
//! listener. There is no plaintext listener.

use std::sync::Arc;

use anyhow::Context;
use kiroku_proto::admin_server::AdminServer;
use kiroku_proto::ingest_server::IngestServer;
use kiroku_proto::query_server::QueryServer;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

use crate::alerts::{Alerting, RuleSet, notify};
use crate::auth;
use crate::config::CollectorConfig;
use crate::ingest::{Committer, IngestService};
use crate::query::QueryService;
use crate::store::Store;

/// Records in the audit log what the collector starts with (the TLS
/// files, the revocation list and the rules file, each with its SHA-256),
/// and has every later TLS / CRL reload recorded too.
async fn audit_start(
    cfg: &CollectorConfig,
    store: &Arc<Store>,
    tls: &Arc<crate::listener::TlsSource>,
) -> anyhow::Result<()> {
    use crate::store::audit::{COLLECTOR_IDENTITY, admin_call, file_digest};
    let mut files = vec![
        format!("ca {}", file_digest(&cfg.tls.ca)),
        format!("cert {}", file_digest(&cfg.tls.cert)),
    ];
    if let Some(crl) = &cfg.crl {
        files.push(format!("crl {}", file_digest(crl)));
    }
    if let Some(a) = &cfg.agents_ca {
        files.push(format!("agents_ca {}", file_digest(&a.cert)));
        files.push(format!("agents_crl {}", file_digest(&a.crl)));
    }
    if let Some(a) = &cfg.alerts {
        files.push(format!("rules {}", file_digest(&a.rules)));
    }
    let detail = format!(
        "kiroku-collector {} started: {}",
        kiroku_common::VERSION,
        files.join(", ")
    );
    let s = store.clone();
    tokio::task::spawn_blocking(move || {
        s.audit_admin(COLLECTOR_IDENTITY, admin_call::CONFIG_RELOAD, &detail)
    })
    .await?
    .context("recording the collector's start in the audit log")?;
    let s = store.clone();
    tls.audit_reloads_with(Box::new(move |call, detail| {
        if let Err(e) = s.audit_admin(COLLECTOR_IDENTITY, call, detail) {
            tracing::error!(error = %e, call, "the TLS reload could not be recorded in the audit log");
        }
    }));
    Ok(())
}

/// Largest gRPC message accepted (a batch or a blob chunk).
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// How long a shutdown waits for connections to close by themselves (Ship
/// streams end as soon as their agent's current batch is answered; a
/// query in progress finishes) before the rest are cut. The systemd unit
/// allows 60 s.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

pub async fn serve(
    cfg: CollectorConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The agents' issuing CA first: it writes its revocation list when
    // there is none yet, which the TLS configuration then reads.
    let agents_ca = crate::agents::open_ca(&cfg)?;
    let tls = crate::listener::TlsSource::with_agents(
        cfg.tls.clone(),
        cfg.crl.clone(),
        cfg.agents_ca.as_ref().map(|a| a.files()),
    )?;
    let own = cfg
        .tls
        .own_identity()
        .with_context(|| format!("reading {}", cfg.tls.cert.display()))?;
    if own.role != kiroku_common::pki::Role::Collector {
        anyhow::bail!(
            "{} is a {} certificate; the collector needs one issued with `kiroku certs issue --role collector`",
            cfg.tls.cert.display(),
            own.role
        );
    }
    let dir = cfg.data_dir.clone();
    let store = Arc::new(
        tokio::task::spawn_blocking(move || Store::open(&dir))
            .await?
            .with_context(|| format!("opening the store in {}", cfg.data_dir.display()))?,
    );
    store.disk.set_min_free(cfg.min_free_bytes);
    let internal = cfg
        .internal()
        .map_err(|m| anyhow::anyhow!("the config's field `internal_domains`: {m}"))?;
    store.index.set_internal_domains(internal);
    let (alerting, notifier_tasks) = start_alerting(&cfg, &store)?;
    audit_start(&cfg, &store, &tls).await?;
    let (stop_watch, watch_rx) = tokio::sync::watch::channel(false);
    let rules_watcher = cfg.alerts.as_ref().map(|a| {
        tokio::spawn(alerting.clone().watch(
            a.rules.clone(),
            std::time::Duration::from_secs(a.reload_secs),
            watch_rx,
            store.clone(),
        ))
    });
    let health_watcher = cfg.alerts.as_ref().map(|a| {
        tokio::spawn(alerting.clone().health(
            store.clone(),
            std::time::Duration::from_secs(a.health_secs.max(1)),
            stop_watch.subscribe(),
        ))
    });
    let ca_pem = std::fs::read(&cfg.tls.ca)
        .with_context(|| format!("reading the CA certificate {}", cfg.tls.ca.display()))?;
    let (checkpoints, checkpoint_feed) = crate::integrity::checkpoint::CheckpointWriter::start(
        store.clone(),
        &cfg.checkpoint,
        &own.name,
        &ca_pem,
        alerting.clone(),
    )
    .await?;
    if let Some(signer) = checkpoints.signer() {
        let detail = format!(
            "checkpoint signer {} loaded: certificate {}",
            signer.identity(),
            crate::store::audit::file_digest(signer.cert_path())
        );
        let s = store.clone();
        tokio::task::spawn_blocking(move || {
            s.audit_admin(
                crate::store::audit::COLLECTOR_IDENTITY,
                crate::store::audit::admin_call::SIGNER_CERT_LOADED,
                &detail,
            )
        })
        .await?
        .context("recording the signer certificate in the audit log")?;
    }
    let (committer, committer_thread) = Committer::start(store.clone(), alerting.clone())?;
    let analysis = crate::analysis::worker::Workers::start(
        store.clone(),
        alerting.clone(),
        crate::analysis::Limits::from_config(&cfg.analysis),
        cfg.analysis.worker_count(),
    )?;
    // Set when the shutdown signal arrives: Ship streams tell their agents
    // to go away and come back (`Shutdown`).
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);

    let ingest = IngestServer::new(
        IngestService::new(store.clone(), committer, cfg.max_blob_bytes)
            .with_clock_threshold(cfg.clock_offset_threshold_ms)
            .with_shutdown(stopping)
            .with_checkpoints(checkpoint_feed),
    )
    .accept_compressed(CompressionEncoding::Zstd)
    .send_compressed(CompressionEncoding::Zstd)
    .max_decoding_message_size(MAX_MESSAGE);
    let tls_status = tls.clone();
    let query = QueryServer::new(
        QueryService::new(store.clone(), alerting.clone())
            .with_tls_status(Arc::new(move || tls_status.crl_status()))
            .with_ca_pem(
                std::fs::read(&cfg.tls.ca)
                    .with_context(|| format!("reading {}", cfg.tls.ca.display()))?,
                cfg.checkpoint
                    .tsa_ca_cert
                    .as_ref()
                    .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
                    .transpose()?,
            )
            .with_signer(checkpoints.signer()),
    )
    .accept_compressed(CompressionEncoding::Zstd)
    .send_compressed(CompressionEncoding::Zstd)
    .max_decoding_message_size(MAX_MESSAGE);
    let retention = {
        let (s, c) = (store.clone(), cfg.retention.clone());
        tokio::task::spawn_blocking(move || crate::retention::Retention::open(&s, &c)).await??
    };
    let retention_watcher = tokio::spawn(retention.clone().watch(
        std::time::Duration::from_secs(cfg.retention.reload_secs),
        stop_watch.subscribe(),
        store.clone(),
    ));
    let holds = Arc::new(crate::holds::Holds::open(&store.meta)?);
    let maintenance = crate::maintenance::Maintenance::open(
        store.clone(),
        alerting.clone(),
        retention.clone(),
        holds.clone(),
        &cfg.maintenance,
        cfg.agents.stale_after_ms(),
    )?;
    // Issue 22: enrollment (its own listener) and renewal.
    let enroll = crate::enroll::Enroll::open(&cfg, &store, agents_ca.clone())?;
    let enroll_listener = crate::enroll::start_listener(&cfg, enroll.clone(), tls.clone(), {
        let mut stopping = stop_watch.subscribe();
        async move {
            let _ = stopping.wait_for(|s| *s).await;
        }
    })
    .await?;
    let agent_certs = kiroku_proto::agent_certs_server::AgentCertsServer::new(
        crate::enroll::rpc::AgentCertsService {
            enroll: enroll.clone(),
        },
    );
    let enroll_admin = kiroku_proto::enroll_admin_server::EnrollAdminServer::new(
        crate::enroll::admin::EnrollAdminService {
            store: store.clone(),
            enroll,
        },
    );
    let admin = AdminServer::new(
        crate::admin::AdminService::new(
            store.clone(),
            alerting.clone(),
            retention.clone(),
            holds.clone(),
        )
        .with_maintenance(maintenance.clone())
        .with_agents_ca(agents_ca),
    )
    .accept_compressed(CompressionEncoding::Zstd)
    .send_compressed(CompressionEncoding::Zstd)
    .max_decoding_message_size(MAX_MESSAGE);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<IngestServer<IngestService>>()
        .await;
    health_reporter
        .set_serving::<QueryServer<QueryService>>()
        .await;
    // Both reflection versions: grpcurl speaks v1, many grpcio tools v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(kiroku_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (change `listen` in the config)",
                cfg.listen
            )
        })?;
    tracing::info!(
        listen = %cfg.listen, data_dir = %cfg.data_dir.display(), events = store.index.count(),
        "kiroku-collector {} serving (mTLS)", kiroku_common::VERSION
    );
    tls.spawn_reloader();
    let maintenance_scheduler = maintenance.spawn();
    let live = tls.live.clone();
    let shutdown = async move {
        shutdown.await;
        tracing::info!(
            connections = live.len(),
            "shutting down: no new connections; agents are told to reconnect later"
        );
        let _ = stopping_tx.send(true);
        // Whatever is still open after the grace period (a live alert
        // tail, a client that ignores GOAWAY) is cut, so the shutdown is
        // bounded; commits in progress still finish (the committer is
        // joined below).
        tokio::spawn(async move {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
            live.cut_all("collector shutting down");
        });
    };
    Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .add_service(InterceptedService::new(
            ingest,
            auth::require("Ingest", auth::INGEST_ROLES),
        ))
        .add_service(InterceptedService::new(
            query,
            auth::require("Query", auth::QUERY_ROLES),
        ))
        .add_service(InterceptedService::new(
            admin,
            auth::require("Admin", auth::QUERY_ROLES),
        ))
        .add_service(InterceptedService::new(
            agent_certs,
            auth::require("AgentCerts", &[kiroku_common::pki::Role::Agent]),
        ))
        .add_service(InterceptedService::new(
            enroll_admin,
            auth::require("EnrollAdmin", auth::QUERY_ROLES),
        ))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(crate::listener::incoming(listener, tls.clone()), shutdown)
        .await?;
    tracing::info!("kiroku-collector stopping");
    // A maintenance run stops after its batch and resumes next window.
    maintenance.shutdown().await;
    let _ = maintenance_scheduler.await;
    // The workers finish the batch in hand; what is left stays queued.
    tokio::task::spawn_blocking(move || analysis.stop()).await?;
    drop(store);
    // The committer ends once the services (and their handles) are gone.
    let _ = tokio::task::spawn_blocking(move || committer_thread.join()).await;
    // Nothing appends any more: a last checkpoint covers what is new.
    checkpoints.shutdown().await;
    maintenance.mark_clean();
    // Notifiers get a moment to deliver what is queued once nothing can
    // add to their queues any more.
    let _ = stop_watch.send(true);
    if let Some(l) = enroll_listener {
        let _ = l.await;
    }
    if let Some(w) = rules_watcher {
        let _ = w.await;
    }
    if let Some(w) = health_watcher {
        let _ = w.await;
    }
    let _ = retention_watcher.await;
    drop(alerting);
    for t in notifier_tasks {
        let abort = t.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(5), t)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    Ok(())
}

/// The alert engine with the configured rules and notifiers. A rules file
/// that does not load stops the start (the error names file, line, field).
fn start_alerting(
    cfg: &CollectorConfig,
    store: &Store,
) -> anyhow::Result<(Arc<Alerting>, Vec<tokio::task::JoinHandle<()>>)> {
    let Some(a) = &cfg.alerts else {
        return Ok((
            Arc::new(
                Alerting::new(&store.meta, RuleSet::default(), Vec::new(), 10_000)?
                    .with_internal_domains(store.index.internal_domains().as_ref().clone()),
            ),
            Vec::new(),
        ));
    };
    let internal = store.index.internal_domains().as_ref().clone();
    let rules = RuleSet::load(&a.rules, &internal)?;
    let mut sinks = Vec::new();
    let mut tasks = Vec::new();
    if let Some(w) = &a.webhook {
        let (s, t) = notify::webhook(w.clone())?;
        sinks.push(s);
        tasks.push(t);
    }
    if let Some(m) = &a.mail {
        let (s, t) = notify::mail(m.clone())?;
        sinks.push(s);
        tasks.push(t);
    }
    let names: Vec<&str> = sinks.iter().map(|s| s.name()).collect();
    rules.check_routes(&names)?;
    tracing::info!(rules_file = %a.rules.display(), rules = rules.rules.len(), notifiers = sinks.len(), "alerting");
    Ok((
        Arc::new(Alerting::new(&store.meta, rules, sinks, a.keep)?.with_internal_domains(internal)),
        tasks,
    ))
}
