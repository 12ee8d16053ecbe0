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
pub mod gaps;
pub mod memory;
pub mod shipper;
pub mod test_hooks;

use anyhow::Context;

pub use config::AgentConfig;

/// How often pending gap records are retried while the buffer is full.
const GAP_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// How often the host identity is re-read for changes.
const HOST_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs the agent until SIGINT/SIGTERM.
pub async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
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
    let buffer = tokio::task::spawn_blocking({
        let (dir, max, cache) = (
            cfg.data_dir.clone(),
            cfg.buffer.max_bytes,
            cfg.buffer.cache_bytes,
        );
        move || buffer::Buffer::open(&dir, max, cache)
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
    let files = match cfg.files.clone() {
        Some(f) if f.enabled() => Some(capture::files::FileCapture::start(
            f,
            &cfg.data_dir,
            buffer.clone(),
            gaps.clone(),
            ctx.clone(),
        )?),
        Some(_) => {
            tracing::warn!(
                "[files] has nothing to watch (no watch roots, removable media off): file capture is off"
            );
            None
        }
        None => None,
    };
    let smtp = capture::smtp::SmtpCapture::new(
        cfg.smtp.clone(),
        buffer.clone(),
        cfg.buffer.when_full,
        gaps.clone(),
        ctx.clone(),
    )?;
    let gap_writer = tokio::spawn(gaps.clone().run(GAP_CHECK_EVERY));
    let listeners = smtp.bind().await?;
    let shipper = shipper::Shipper {
        buffer: buffer.clone(),
        endpoint: cfg.collector.endpoint.clone(),
        tls,
        ctx: ctx.clone(),
        keepalive: std::time::Duration::from_secs(cfg.collector.keepalive_secs),
    };
    let shipper = tokio::spawn(shipper.run());
    let host_watch = tokio::spawn(capture::host::watch(
        ctx.clone(),
        buffer.clone(),
        cfg.host.domain.clone(),
        HOST_CHECK_EVERY,
    ));
    // After an I/O error sled refuses every write, even once space is back:
    // mail would be refused until a restart, so restart now (the service
    // manager brings the agent back; the buffer reopens at its last
    // durable state).
    let watchdog_buffer = buffer.clone();
    let watchdog = tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            if let Some(why) = watchdog_buffer.failed() {
                tracing::error!(
                    buffer = %watchdog_buffer.dir().display(),
                    error = %why,
                    "the agent buffer failed to write and cannot continue in this process; exiting (status 75) so the service manager restarts the agent. Check free space and the disk under it; nothing recorded is lost"
                );
                std::process::exit(75);
            }
        }
    });
    smtp.serve(listeners, kiroku_common::shutdown_signal())
        .await;
    watchdog.abort();
    tracing::info!("kiroku-agent stopping");
    gap_writer.abort();
    host_watch.abort();
    if let Some(files) = files {
        files.stop().await;
    }
    shipper.abort();
    let _ = shipper.await;
    Ok(())
}
