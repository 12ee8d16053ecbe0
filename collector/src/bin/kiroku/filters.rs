//! The search filter flags, shared by every command that selects events
//! (`search`, `stats`, `export`): the flags, the `SearchRequest` they make,
//! and the checks that name the flag at fault before anything is sent.

use kiroku_proto::SearchRequest;

use crate::zone::{self, Zone};

// Issue 21: network and P2P records.
mod network;

/// The filters of a search, shared by `search`, `stats` and `export`.
#[derive(clap::Args, Debug)]
pub struct SearchArgs {
    /// Start of the time range: a date (YYYY-MM-DD, midnight in the --tz
    /// zone), a local time (YYYY-MM-DD HH:MM), RFC 3339 with an offset, or
    /// relative (30m, 24h, 7d).
    #[arg(long)]
    pub from: Option<String>,
    /// End of the time range (exclusive), same forms as --from.
    #[arg(long)]
    pub to: Option<String>,
    #[arg(long)]
    pub host: Option<String>,
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub agent: Option<String>,
    /// Any envelope or header address; wildcards * and ? ('*@gmail.com').
    #[arg(long)]
    pub address: Option<String>,
    /// MAIL FROM or From:; wildcards * and ? ('bob*@example.com').
    #[arg(long)]
    pub sender: Option<String>,
    /// RCPT TO, To:, Cc: or Bcc; wildcards * and ? ('*@gmail.com': that
    /// domain exactly).
    #[arg(long)]
    pub recipient: Option<String>,
    /// A sender's domain, subdomains included (example.com finds
    /// bob@mx.example.com).
    #[arg(long)]
    pub sender_domain: Option<String>,
    /// A recipient's domain, subdomains included.
    #[arg(long)]
    pub recipient_domain: Option<String>,
    /// SMTP client address or network: 10.1.2.3, 10.1.0.0/16, 2001:db8::/32.
    #[arg(long)]
    pub client_ip: Option<String>,
    /// Message-ID header (with or without <>).
    #[arg(long)]
    pub message_id: Option<String>,
    /// The upstream's queue id ("queued as ...").
    #[arg(long)]
    pub queue_id: Option<String>,
    /// Reply code (550) or class (4xx, 5xx): the final reply or any
    /// recipient's.
    #[arg(long)]
    pub reply_code: Option<String>,
    /// SMTP AUTH login of the client (--kind auth: the user an attempt
    /// claimed).
    #[arg(long)]
    pub auth_user: Option<String>,
    /// Mail flow by the collector's internal_domains: outbound, inbound,
    /// internal or transit.
    #[arg(long)]
    pub direction: Option<String>,
    /// Mail with a recipient outside the collector's internal_domains.
    #[arg(long, conflicts_with = "internal")]
    pub external: bool,
    /// Mail whose recipients are all inside the collector's
    /// internal_domains.
    #[arg(long)]
    pub internal: bool,
    /// Full text over subject, body, the text of the attachments and the
    /// upstream's replies.
    #[arg(long)]
    pub text: Option<String>,
    #[arg(long)]
    pub subject: Option<String>,
    #[arg(long)]
    pub has_attachment: bool,
    /// Words of an attachment's file name.
    #[arg(long)]
    pub attachment: Option<String>,
    /// Words in the text of an attachment (PDF, Word, Excel, PowerPoint,
    /// text, HTML), searchable once the collector has read it.
    #[arg(long)]
    pub attachment_text: Option<String>,
    /// SHA-256 of an attachment, a raw message or a file.
    #[arg(long)]
    pub sha256: Option<String>,
    #[arg(long)]
    pub tag: Option<String>,
    /// Events tagged by this alert rule ("*" for any alert).
    #[arg(long)]
    pub alert: Option<String>,
    /// delivered, rejected, aborted, unknown or captured (mail); open,
    /// still_open or closed (incidents); succeeded or failed (AUTH records,
    /// --kind auth).
    #[arg(long)]
    pub outcome: Option<String>,
    /// email, file, host_change, gap (unrecorded), integrity (a chain
    /// break), incident (relay incidents), auth (AUTH attempts through the
    /// relay), mta_log, network (connections and traffic) or p2p (P2P
    /// detections).
    #[arg(long)]
    pub kind: Option<String>,
    /// File events: words of the path or old path ("alice/q3 report").
    #[arg(long)]
    pub path: Option<String>,
    /// File events: create, modify, delete, rename, copy_to_removable,
    /// overflow, watch_lost, watch_restored, volume_mounted,
    /// volume_unmounted.
    #[arg(long = "op")]
    pub operation: Option<String>,
    /// File events on removable volumes only.
    #[arg(long)]
    pub removable: bool,
    /// Relay incidents of this kind (with --kind incident):
    /// upstream_unreachable, upstream_refused, upstream_tls,
    /// upstream_starttls_absent, upstream_timeout, upstream_lost,
    /// client_timeout, client_gone_before_mail, client_too_many_errors,
    /// client_tls. Their state (open, still_open, closed) is --outcome.
    #[arg(long)]
    pub incident: Option<String>,
    /// Mail whose whole transaction (the client's MAIL to the verdict it
    /// got) took at least this long: 250ms, 5s, 2m.
    #[arg(long, value_name = "SPAN", value_parser = delay)]
    pub min_delay: Option<u64>,
    /// Mail whose whole transaction took less than this.
    #[arg(long, value_name = "SPAN", value_parser = delay)]
    pub max_delay: Option<u64>,
    /// Mail, AUTH records and relay incidents of this upstream (host:port
    /// as the agent's smtp.upstream names it).
    #[arg(long, value_name = "HOST:PORT")]
    pub upstream: Option<String>,
    /// Filter and order by corrected time (each agent's clock corrected by
    /// its measured offset to the collector) instead of the agents' clocks.
    #[arg(long)]
    pub corrected_time: bool,
    /// Mail by its downstream fate from the MTA's log: delivered,
    /// deferred, bounced, expired or unknown (no log line joined yet).
    #[arg(long)]
    pub delivery: Option<String>,
    /// Issue 21: network and P2P records.
    #[command(flatten)]
    pub network: network::NetworkArgs,
}

/// The search request of the filter flags (no page set).
pub fn search_request(a: SearchArgs, zone: &Zone) -> anyhow::Result<SearchRequest> {
    let now = kiroku_common::now_ms();
    let s = |o: Option<String>| o.unwrap_or_default();
    let mut req = SearchRequest {
        from_ms: a
            .from
            .as_deref()
            .map(|t| zone::parse_time(t, now, zone))
            .transpose()?
            .unwrap_or(0),
        to_ms: a
            .to
            .as_deref()
            .map(|t| zone::parse_time(t, now, zone))
            .transpose()?
            .unwrap_or(0),
        host: s(a.host),
        user: s(a.user),
        agent_id: s(a.agent),
        address: s(a.address),
        sender: s(a.sender),
        recipient: s(a.recipient),
        text: s(a.text),
        subject: s(a.subject),
        has_attachment: a.has_attachment,
        attachment_name: s(a.attachment),
        sha256: s(a.sha256).to_lowercase(),
        tag: s(a.tag),
        alert: s(a.alert),
        outcome: s(a.outcome),
        kind: s(a.kind),
        path: s(a.path),
        operation: s(a.operation),
        removable: a.removable,
        page_size: 0,
        page_token: String::new(),
        corrected_time: a.corrected_time,
        sender_domain: s(a.sender_domain),
        recipient_domain: s(a.recipient_domain),
        client_ip: s(a.client_ip),
        message_id: s(a.message_id),
        queue_id: s(a.queue_id),
        reply_code: s(a.reply_code),
        auth_user: s(a.auth_user),
        direction: s(a.direction),
        external: a.external,
        internal: a.internal,
        ascending: false,
        attachment_text: s(a.attachment_text),
        // Issue 20: relay incidents, delay and upstream; delivery is set
        // below as its flag is added.
        incident: s(a.incident),
        min_delay_ms: a.min_delay.unwrap_or(0),
        max_delay_ms: a.max_delay.unwrap_or(0),
        upstream: s(a.upstream),
        ..Default::default()
    };
    // Issue 20 (delivery).
    req.delivery = s(a.delivery).trim().to_lowercase();
    // Issue 21.
    a.network.apply(&mut req)?;
    if !req.operation.is_empty() {
        req.operation = kiroku_common::vocabulary::file_operation(&req.operation)
            .map_err(|e| anyhow::anyhow!("{}", e.replacen(": use", " for --op: use", 1)))?;
    }
    check_search_flags(&req)?;
    Ok(req)
}

/// `--min-delay 5s` in milliseconds.
fn delay(s: &str) -> Result<u64, String> {
    kiroku_collector::agents::parse_span(s).map(|ms| ms.unsigned_abs())
}

/// Checks the values of the mail-flow flags before anything is sent, so
/// the error names the flag (the collector checks them again).
fn check_search_flags(r: &SearchRequest) -> anyhow::Result<()> {
    use kiroku_common::{mail, search};
    let flag =
        |name: &str, res: Result<(), String>| res.map_err(|m| anyhow::anyhow!("--{name}: {m}"));
    for (name, v) in [
        ("address", &r.address),
        ("sender", &r.sender),
        ("recipient", &r.recipient),
    ] {
        if !v.trim().is_empty() {
            flag(name, search::AddressPattern::parse(v).map(drop))?;
        }
    }
    for (name, v) in [
        ("sender-domain", &r.sender_domain),
        ("recipient-domain", &r.recipient_domain),
    ] {
        if !v.trim().is_empty() {
            flag(name, mail::normalise_domain(v).map(drop))?;
        }
    }
    if !r.client_ip.trim().is_empty() {
        flag("client-ip", search::ip_range(&r.client_ip).map(drop))?;
    }
    if !r.reply_code.trim().is_empty() {
        flag("reply-code", search::reply_codes(&r.reply_code).map(drop))?;
    }
    if !r.incident.trim().is_empty() {
        flag(
            "incident",
            kiroku_common::vocabulary::incident_kind(&r.incident).map(drop),
        )?;
    }
    if r.max_delay_ms != 0 && r.max_delay_ms <= r.min_delay_ms {
        anyhow::bail!("--max-delay: must be above --min-delay (the range is empty)");
    }
    let statuses = kiroku_collector::delivery::STATUSES;
    if !r.delivery.is_empty() && !statuses.contains(&r.delivery.as_str()) {
        anyhow::bail!(
            "--delivery: unknown status {}: use one of {}",
            kiroku_common::quote::quote(&r.delivery),
            statuses.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn bad_flag_values_name_the_flag() {
        use kiroku_proto::SearchRequest;
        for (r, flag) in [
            (
                SearchRequest {
                    client_ip: "10.1.0.0/40".into(),
                    ..Default::default()
                },
                "--client-ip",
            ),
            (
                SearchRequest {
                    reply_code: "7xx".into(),
                    ..Default::default()
                },
                "--reply-code",
            ),
            (
                SearchRequest {
                    recipient_domain: "not a domain".into(),
                    ..Default::default()
                },
                "--recipient-domain",
            ),
            (
                SearchRequest {
                    sender: "*".repeat(9),
                    ..Default::default()
                },
                "--sender",
            ),
        ] {
            let e = super::check_search_flags(&r).expect_err(flag).to_string();
            assert!(e.starts_with(flag), "{e}");
        }
        let ok = SearchRequest {
            client_ip: "2001:db8::/32".into(),
            reply_code: "4xx".into(),
            recipient: "*@gmail.com".into(),
            ..Default::default()
        };
        super::check_search_flags(&ok).expect("valid values");
    }
}
