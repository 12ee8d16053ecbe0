//! Kiroku endpoint agent: capture sources (`capture`), the durable buffer
//! (`buffer`) and the shipper to the collector (`shipper`), wired together
//! by [`run`].
//!
//! Architecture invariant: capture never waits on the collector. It writes
//! to the buffer and returns; the shipper drains the buffer independently.
//! The agent never links the collector's storage or index code.

pub mod buffer;
pub mod capture;
pub mod config;
/// Issue 22: `kiroku-agent config write`, the installers' step.
pub mod deploy;
pub mod enroll;
pub mod gaps;
pub mod memory;
pub mod os;
pub mod reload;
// Issue 22 (lane host): the Windows service and its commands.
pub mod service;
pub mod shipper;
pub mod test_hooks;

use anyhow::Context;

pub use config::AgentConfig;

/// How often pending gap records are retried while the buffer is full.
const GAP_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the host identity is re-read for changes.
const HOST_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs the agent until SIGINT/SIGTERM; `file` is the config file `cfg`
/// came from, reloaded on SIGHUP and when it changes (`reload`).
pub async fn run(cfg: AgentConfig, file: reload::ConfigFile) -> anyhow::Result<()> {
    run_until(cfg, file, kiroku_common::shutdown_signal()).await
}

/// [`run`] until `shutdown` resolves: the Windows service's stop control
/// (`service`) instead of the console's signals.
pub async fn run_until(
    cfg: AgentConfig,
    file: reload::ConfigFile,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let hup = reload::hangup_signal();
    // Issue 22: no certificate yet and a token: enroll first.
    enroll::ensure_enrolled(&cfg.collector, &cfg.server_name()).await?;
    let identity = cfg.collector.tls.own_identity().with_context(|| {
        format!(
            "reading the agent identity from {}",
            cfg.collector.tls.cert.display()
        )
    })?;
    if identity.role != kiroku_common::pki::Role::Agent {
        anyhow::bail!(
            "{} is a {} certificate; the agent needs one issued with `kiroku certs issue --role agent`",
            cfg.collector.tls.cert.display(),
            identity.role
        );
    }
    let tls = cfg.collector.tls.client_config(&cfg.server_name())?;
    // A buffer that cannot be opened for want of space (or another I/O
    // reason) does not stop the agent: it runs, refuses mail with 451 and
    // opens the buffer once it can (see `buffer`'s invariants).
    let buffer = tokio::task::spawn_blocking({
        let dir = cfg.data_dir.clone();
        let limits = buffer::Limits {
            max_bytes: cfg.buffer.max_bytes,
            min_free_bytes: cfg.buffer.min_free_bytes,
            cache_bytes: cfg.buffer.cache_bytes,
        };
        move || buffer::Buffer::open_with(&dir, limits)
    })
    .await??;
    #[cfg(feature = "test-hooks")]
    {
        tracing::warn!(
            "this kiroku-agent is a test build (test hooks compiled in): not for production"
        );
    }
    let host = capture::host::snapshot(cfg.host.domain.as_deref());
    let backlog = buffer.backlog();
    tracing::info!(
        agent_id = %identity.name, host = %host.fqdn, queued = backlog.queued,
        buffer = %cfg.data_dir.display(), "kiroku-agent {} starting", kiroku_common::VERSION
    );
    let ctx = capture::context::CaptureContext::new(
        identity.name.clone(),
        host.clone(),
        capture::host::own_user(),
        cfg.custom.clone(),
        capture::context::Clock::from_env(),
    );
    let gaps = gaps::Gaps::new(buffer.clone(), ctx.clone());
    // File capture reads its state from the buffer. A buffer that could not
    // be opened at start (a full disk) defers it until the buffer opens, so
    // the relay still answers (451) meanwhile instead of the agent exiting.
    let files = reload::files::FilesRunner::new(
        cfg.files.clone(),
        cfg.data_dir.clone(),
        buffer.clone(),
        gaps.clone(),
        ctx.clone(),
    );
    if !buffer.is_open() {
        let (buffer, files) = (buffer.clone(), files.clone());
        tokio::spawn(async move {
            buffer.opened().await;
            tracing::info!("the agent buffer opened: starting file capture");
            if let Err(e) = files.start().await {
                tracing::error!(error = %format!("{e:#}"), "file capture could not start");
            }
        });
    } else {
        files.start().await?;
    }
    let smtp = capture::smtp::SmtpCapture::new(
        cfg.smtp.clone(),
        buffer.clone(),
        cfg.buffer.when_full,
        gaps.clone(),
        ctx.clone(),
    )?;
    // Issue 20: the MTA's own log (followers wait for the buffer to open).
    let mta_log = capture::mtalog::MtaLogCapture::start(&cfg.mta_log, buffer.clone(), ctx.clone())?;
    // Shared with the reload hook below; taken out at stop.
    let mta_log = std::sync::Arc::new(std::sync::Mutex::new(Some(mta_log)));
    // Issue 21: network activity (a thread that waits for the buffer to
    // open; restarted by a reload that changes `[network]`).
    let network = reload::NetworkSlot::new(
        cfg.collector.endpoint.clone(),
        buffer.clone(),
        ctx.clone(),
        gaps.clone(),
    );
    network.start(&cfg.network);
    let gap_writer = tokio::spawn(gaps.clone().run(GAP_CHECK_EVERY));
    let listeners = smtp.bind().await?;
    let live = capture::smtp::Live::new(smtp.clone());
    let reloader = reload::Reloader::new(
        file,
        cfg.clone(),
        Some(live.clone()),
        ctx.clone(),
        files.clone(),
    );
    let mut reloader = reloader;
    reloader.on_mta_log(reload::mta_log_hook(mta_log.clone()));
    reloader.on_network(reload::network_hook(network.clone()));
    let config_sha256 = reloader.digest();
    let (stop_reloader, reloader_stop) = tokio::sync::oneshot::channel::<()>();
    let reloader = tokio::spawn(reloader.run(hup, reloader_stop));
    let shipper = shipper::Shipper {
        buffer: buffer.clone(),
        endpoint: cfg.collector.endpoint.clone(),
        tls,
        ctx: ctx.clone(),
        keepalive: std::time::Duration::from_secs(cfg.collector.keepalive_secs),
        config_sha256,
        tls_files: Some((cfg.collector.tls.clone(), cfg.server_name())),
    };
    let shipper = tokio::spawn(shipper.run());
    let renewal = cfg.collector.renew.then(|| {
        enroll::spawn_renewal(
            cfg.collector.tls.clone(),
            cfg.collector.endpoint.clone(),
            cfg.server_name(),
        )
    });
    let host_watch = tokio::spawn(capture::host::watch(
        ctx.clone(),
        buffer.clone(),
        cfg.host.domain.clone(),
        HOST_CHECK_EVERY,
    ));
    // Every I/O error in the buffer is recovered in-process (it reopens once
    // the disk takes writes). Only a database found damaged when reopened
    // needs a restart, which moves it aside: exit with status 75 for the
    // service manager (the packaged unit restarts the agent).
    let restart_buffer = buffer.clone();
    let watchdog = tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if let Some(why) = restart_buffer.needs_restart() {
                tracing::error!(
                    buffer = %restart_buffer.dir().display(), error = %why,
                    "the agent buffer cannot be used by this process any more; exiting (status 75) so the service manager restarts the agent, which moves the damaged database aside (raw messages are kept)"
                );
                std::process::exit(75);
            }
        }
    });
    smtp.serve(live, listeners, shutdown).await;
    // Stopped between reloads, never inside one: a reload that is
    // restarting file capture finishes first, so no watcher is dropped
    // with records pending.
    let _ = stop_reloader.send(());
    if tokio::time::timeout(std::time::Duration::from_secs(30), reloader)
        .await
        .is_err()
    {
        tracing::warn!("a configuration reload was still running at shutdown after 30 s");
    }
    watchdog.abort();
    tracing::info!("kiroku-agent stopping");
    gap_writer.abort();
    host_watch.abort();
    files.stop().await;
    let mta_log = match mta_log.lock() {
        Ok(mut m) => m.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    if let Some(mta_log) = mta_log {
        mta_log.stop().await;
    }
    network.stop().await;
    shipper.abort();
    let _ = shipper.await;
    if let Some(r) = renewal {
        r.abort();
    }
    Ok(())
}
