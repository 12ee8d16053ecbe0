//! Alert notifiers: a webhook (HTTP POST of JSON, retried with backoff)
//! and mail to administrators (SMTP, rule alerts waiting in the queue go
//! out together in one mail; an alert with a body, the maintenance
//! summary, in its own). Both carry the alert's severity (`info`,
//! `warning`, `critical`): the mail subject starts with `[kiroku
//! <severity>]`, the webhook JSON has `severity` and `body`. Each runs as a task behind a bounded queue;
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
    /// body: rule, kind, event_id, fired_at_ms, severity (info, warning,
    /// critical; a rule's alert is a warning), summary, body (a longer text,
    /// the maintenance summary's), event.
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
        // An alert with a body (a maintenance summary) taken off the queue
        // while a batch was gathered: it goes out next, in its own mail.
        let mut next: Option<Alert> = None;
        loop {
            let first = match next.take() {
                Some(a) => a,
                None => match rx.recv().await {
                    Some(a) => a,
                    None => break,
                },
            };
            // Rule alerts that arrived together go out in one mail.
            let mut batch = vec![first];
            while batch.len() < 100 && !is_report(&batch[0]) {
                match rx.try_recv() {
                    Ok(a) if is_report(&a) => {
                        next = Some(a);
                        break;
                    }
                    Ok(a) => batch.push(a),
                    Err(_) => break,
                }
            }
            let (subject, body) = compose(&batch);
            let mut b = lettre::Message::builder()
                .from(from.clone())
                .subject(subject)
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

/// How urgent a severity is: info < warning < critical (an unknown one
/// counts as a warning).
fn rank(severity: &str) -> u8 {
    match severity {
        "info" => 0,
        "critical" => 2,
        _ => 1,
    }
}

/// Subject and text of one alert mail. The subject starts with
/// `[kiroku <severity>]` (the batch's most urgent), so mail filters can
/// sort by urgency; an alert with a body (a maintenance summary) is mailed
/// alone, its summary as the subject and its body as the text; rule
/// alerts list rule, severity, event and summary each.
pub fn compose(batch: &[Alert]) -> (String, String) {
    let severity = batch
        .iter()
        .map(kiroku_common::alert_severity)
        .max_by_key(|s| rank(s))
        .unwrap_or("warning");
    let one_line = |s: &str| s.replace(['\r', '\n'], " ");
    let subject = match batch {
        [one] if is_report(one) => {
            format!("[kiroku {severity}] {}", one_line(&one.summary))
        }
        [one] => format!(
            "[kiroku {severity}] {}: {}",
            one_line(&one.rule),
            one_line(&one.summary)
        ),
        many => format!("[kiroku {severity}] {} alerts", many.len()),
    };
    let mut body = String::new();
    for a in batch {
        if is_report(a) {
            body.push_str(&format!(
                "severity: {}\r\n\r\n{}\r\n",
                kiroku_common::alert_severity(a),
                crlf(&a.body)
            ));
            continue;
        }
        body.push_str(&format!(
            "rule:     {} ({})\r\nseverity: {}\r\nevent:    {}\r\nsummary:  {}\r\n",
            a.rule,
            a.kind,
            kiroku_common::alert_severity(a),
            a.event_id,
            a.summary.chars().take(900).collect::<String>()
        ));
        // A rule's details (issue 20): who, what, where, counts, and the
        // command to see more.
        if !a.body.is_empty() {
            body.push_str(&crlf(&a.body.chars().take(4000).collect::<String>()));
        }
        body.push_str("\r\n");
    }
    if batch.iter().any(|a| a.body.is_empty()) {
        body.push_str("Details: kiroku show EVENT_ID; all alerts: kiroku alerts --since 1d\r\n");
    }
    (subject.chars().take(200).collect(), body)
}

/// The collector's own report (the maintenance summary, sent by
/// `Alerting::notify`): mailed alone, its body as the text. A rule's alert
/// has a body too (its details) and is batched with the others.
pub fn is_report(a: &Alert) -> bool {
    a.rule == "maintenance" && !a.body.is_empty()
}

/// Text with every line ending CRLF, as mail wants it.
fn crlf(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\n', "\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(rule: &str, severity: &str, summary: &str, body: &str) -> Alert {
        Alert {
            rule: rule.into(),
            kind: "removable_copy".into(),
            event_id: "pc/s/1".into(),
            severity: severity.into(),
            summary: summary.into(),
            body: body.into(),
            ..Default::default()
        }
    }

    #[test]
    fn subjects_carry_the_most_urgent_severity() {
        let usb = alert("usb", "", "copy to E:", "");
        let summary = |sev: &str, title: &str| {
            alert(
                "maintenance",
                sev,
                title,
                "verified 10 entries\nno problems\n",
            )
        };
        for (batch, subject) in [
            (vec![usb.clone()], "[kiroku warning] usb: copy to E:"),
            (
                vec![summary("info", "Kiroku maintenance: no problems")],
                "[kiroku info] Kiroku maintenance: no problems",
            ),
            (
                vec![summary("critical", "Kiroku maintenance: needs action")],
                "[kiroku critical] Kiroku maintenance: needs action",
            ),
            (
                vec![usb.clone(), alert("hr", "critical", "x", ""), usb.clone()],
                "[kiroku critical] 3 alerts",
            ),
            (
                vec![alert("a", "info", "one\r\nInjected: yes", "")],
                "[kiroku info] a: one  Injected: yes",
            ),
        ] {
            assert_eq!(compose(&batch).0, subject);
        }
        let (_, text) = compose(&[summary("warning", "Kiroku maintenance: problems fixed")]);
        assert_eq!(
            text,
            "severity: warning\r\n\r\nverified 10 entries\r\nno problems\r\n\r\n"
        );
        let (_, text) = compose(&[usb]);
        assert!(text.starts_with("rule:     usb (removable_copy)\r\nseverity: warning\r\n"));
        // A rule's alert with details: batched, the details under its
        // summary, its subject still the rule and summary.
        let detailed = alert(
            "auth",
            "critical",
            "12 failed AUTH attempts from client 10.0.0.9",
            "who:     client 10.0.0.9\nsee:     kiroku search --kind auth\n",
        );
        let (subject, text) = compose(std::slice::from_ref(&detailed));
        assert_eq!(
            subject,
            "[kiroku critical] auth: 12 failed AUTH attempts from client 10.0.0.9"
        );
        assert!(
            text.contains("summary:  12 failed AUTH attempts from client 10.0.0.9\r\nwho:     client 10.0.0.9\r\nsee:     kiroku search --kind auth\r\n"),
            "{text}"
        );
        assert!(!text.contains("Details: kiroku show EVENT_ID"), "{text}");
    }
}
