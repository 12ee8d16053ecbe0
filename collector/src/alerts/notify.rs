//! Alert notifiers: a webhook (HTTP POST of JSON, retried with backoff)
//! and mail to administrators (SMTP, alerts waiting in the queue go out
//! together in one mail). Each runs as a task behind a bounded queue;
//! [`Sink::offer`] never waits: when a queue is full the alert is dropped
//! from that notifier and logged (it stays tagged and in the replay log).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use kiroku_proto::Alert;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// `[alerts.webhook]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// http:// or https:// URL that receives one POST per alert with a JSON
    /// body: rule, kind, event_id, fired_at_ms, summary, event.
    pub url: String,
    /// Attempts per alert before it is given up (logged), at least 1.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Timeout of one attempt, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Alerts waiting for delivery at most; more are dropped (logged).
    #[serde(default = "default_queue")]
    pub queue: usize,
}

/// How the alert mail reaches the SMTP server.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum MailTls {
    /// Plain SMTP (a local relay on loopback).
    Off,
    /// STARTTLS, required, certificate checked against the system roots.
    Starttls,
    /// Implicit TLS (port 465).
    Tls,
}

/// `[alerts.mail]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailConfig {
    /// SMTP server as host:port.
    pub server: String,
    #[serde(default = "default_mail_tls")]
    pub tls: MailTls,
    /// Sender address of alert mail.
    pub from: String,
    /// Administrators who receive alert mail.
    pub to: Vec<String>,
    /// Login at the server (optional); the password is read from
    /// `password_file` (relative to the collector config).
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Attempts per mail before it is given up (logged), at least 1.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Alerts waiting for mail at most; more are dropped (logged).
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_attempts() -> u32 {
    5
}
fn default_timeout() -> u64 {
    10
}
fn default_queue() -> usize {
    1000
}
fn default_mail_tls() -> MailTls {
    MailTls::Starttls
}

/// The ingest side of one notifier.
pub struct Sink {
    name: &'static str,
    tx: mpsc::Sender<Alert>,
    dropped: AtomicU64,
}

impl Sink {
    /// "webhook" or "mail".
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Queues an alert without waiting.
    pub fn offer(&self, a: &Alert) {
        if self.tx.try_send(a.clone()).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(notifier = self.name, rule = %a.rule, event_id = %a.event_id, dropped_total = n,
                "alert notifier queue full or stopped: this alert is not sent by {} (it is tagged and in the replay log)", self.name);
        }
    }
}

/// Backoff before attempt `n` (1-based): 0.5 s, 1 s, 2 s, ... up to 30 s.
fn backoff(n: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << n.saturating_sub(1).min(6)))
        .min(Duration::from_secs(30))
}

/// The JSON form of an alert (webhook body, `kiroku alerts --json`): one
/// definition in `common`.
pub use kiroku_common::alert_json;

/// Starts the webhook notifier.
pub fn webhook(cfg: WebhookConfig) -> anyhow::Result<(Sink, JoinHandle<()>)> {
    reqwest::Url::parse(&cfg.url)
        .with_context(|| format!("[alerts.webhook] url {:?} is not a URL", cfg.url))?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(cfg.timeout_secs.max(1)))
        .user_agent(concat!("kiroku-collector/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("[alerts.webhook]: cannot build the HTTP client")?;
    let (tx, mut rx) = mpsc::channel::<Alert>(cfg.queue.max(1));
    let task = tokio::spawn(async move {
        while let Some(a) = rx.recv().await {
            let body = alert_json(&a).to_string();
            let attempts = cfg.attempts.max(1);
            for n in 1..=attempts {
                let res = client
                    .post(&cfg.url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                let err = match res {
                    Ok(r) if r.status().is_success() => {
                        tracing::debug!(rule = %a.rule, event_id = %a.event_id, "webhook delivered");
                        break;
                    }
                    Ok(r) => format!("HTTP {}", r.status()),
                    Err(e) => e.to_string(),
                };
                if n == attempts {
                    tracing::error!(url = %cfg.url, rule = %a.rule, event_id = %a.event_id, error = %err,
                        "webhook: alert not delivered after {attempts} attempts, given up");
                    break;
                }
                tracing::warn!(url = %cfg.url, rule = %a.rule, attempt = n, error = %err, "webhook failed, retrying");
                tokio::time::sleep(backoff(n)).await;
            }
        }
    });
    Ok((
        Sink {
            name: "webhook",
            tx,
            dropped: AtomicU64::new(0),
        },
        task,
    ))
}

/// Starts the mail notifier.
pub fn mail(cfg: MailConfig) -> anyhow::Result<(Sink, JoinHandle<()>)> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

    let (host, port) = cfg
        .server
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_matches(['[', ']']).to_owned(),
                p.parse::<u16>().ok()?,
            ))
        })
        .with_context(|| format!("[alerts.mail] server {:?}: use host:port", cfg.server))?;
    let from: lettre::message::Mailbox = cfg
        .from
        .parse()
        .with_context(|| format!("[alerts.mail] from {:?} is not an address", cfg.from))?;
    let mut to = Vec::new();
    for t in &cfg.to {
        to.push(
            t.parse::<lettre::message::Mailbox>()
                .with_context(|| format!("[alerts.mail] to {t:?} is not an address"))?,
        );
    }
    if to.is_empty() {
        anyhow::bail!("[alerts.mail] to: name at least one administrator");
    }
    let tls = match cfg.tls {
        MailTls::Off => Tls::None,
        MailTls::Starttls => {
            Tls::Required(TlsParameters::new(host.clone()).context("[alerts.mail] TLS set-up")?)
        }
        MailTls::Tls => {
            Tls::Wrapper(TlsParameters::new(host.clone()).context("[alerts.mail] TLS set-up")?)
        }
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(port)
        .tls(tls)
        .timeout(Some(Duration::from_secs(30)));
    if let Some(user) = &cfg.username {
        let Some(pw_file) = &cfg.password_file else {
            anyhow::bail!("[alerts.mail] username is set: set password_file too");
        };
        let pw = std::fs::read_to_string(pw_file)
            .with_context(|| format!("[alerts.mail] password_file {}", pw_file.display()))?;
        builder = builder.credentials(Credentials::new(user.clone(), pw.trim_end().to_owned()));
    }
    let transport = builder.build();
    let (tx, mut rx) = mpsc::channel::<Alert>(cfg.queue.max(1));
    let attempts = cfg.attempts.max(1);
    let task = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            // Alerts that arrived together go out in one mail.
            let mut batch = vec![first];
            while batch.len() < 100 {
                match rx.try_recv() {
                    Ok(a) => batch.push(a),
                    Err(_) => break,
                }
            }
            let subject = match batch.as_slice() {
                [one] => format!("[kiroku alert] {}: {}", one.rule, one.summary),
                many => format!("[kiroku alert] {} alerts", many.len()),
            };
            let mut body = String::new();
            for a in &batch {
                body.push_str(&format!(
                    "rule:     {} ({})\r\nevent:    {}\r\nsummary:  {}\r\n\r\n",
                    a.rule,
                    a.kind,
                    a.event_id,
                    a.summary.chars().take(900).collect::<String>()
                ));
            }
            body.push_str(
                "Details: kiroku show EVENT_ID; all alerts: kiroku alerts --since 1d\r\n",
            );
            let mut b = lettre::Message::builder()
                .from(from.clone())
                .subject(subject.chars().take(200).collect::<String>())
                .header(lettre::message::header::ContentType::TEXT_PLAIN);
            for t in &to {
                b = b.to(t.clone());
            }
            let msg = match b.body(body) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(error = %e, "alert mail could not be built");
                    continue;
                }
            };
            for n in 1..=attempts {
                match transport.send(msg.clone()).await {
                    Ok(_) => {
                        tracing::debug!(alerts = batch.len(), "alert mail sent");
                        break;
                    }
                    Err(e) if n == attempts => {
                        tracing::error!(server = %cfg.server, alerts = batch.len(), error = %e,
                            "alert mail not sent after {attempts} attempts, given up");
                    }
                    Err(e) => {
                        tracing::warn!(server = %cfg.server, attempt = n, error = %e, "alert mail failed, retrying");
                        tokio::time::sleep(backoff(n)).await;
                    }
                }
            }
        }
    });
    Ok((
        Sink {
            name: "mail",
            tx,
            dropped: AtomicU64::new(0),
        },
        task,
    ))
}
