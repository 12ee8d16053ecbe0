//! Issue 21: the `p2p` alert kind. Fires on a P2P episode record
//! (`P2pEvent`, written by the agent's detector) once per episode: on its
//! `detected` record, or on the first `update` of an episode whose
//! `detected` record this rule never saw fire (the rule was added while the
//! episode lasted, or `reasons` kept it quiet until a listed reason came);
//! never on `ended`. A rule may name `reasons`: then only an episode record
//! with one of them fires.
//!
//! "Once" holds across collector restarts: the episode's mark is kept in
//! the meta tree `alert_state` (the same marks as incident_open's,
//! `records.rs`), written in the group commit that makes the alert
//! durable; the same record evaluated again after a failed group fires
//! again (its first alert was discarded with the group).
//!
//! The body names the host, the process (name, pid, executable, user),
//! the reasons with what was seen, the peers, the volume and the
//! info_hashes, and the `kiroku report network` command for the episode's
//! time range.

use kiroku_proto::{Event, P2pEvent, ProcessRef, event::Kind};

use super::records::{Details, Fired, host_of};
use super::rules::Rule;

/// The episode a record belongs to: its `episode_id`, else (an agent that
/// sent none) the process and the episode's first time.
fn episode_key(p: &P2pEvent) -> String {
    if !p.episode_id.trim().is_empty() {
        return p.episode_id.trim().to_owned();
    }
    let (pid, started) = p.process.as_ref().map_or((0, 0), |x| (x.pid, x.started_ms));
    format!("{pid}/{started}/{}", p.first_ms)
}

/// "aria2c (pid 4242, /usr/bin/aria2c)".
fn process_text(p: Option<&ProcessRef>) -> String {
    let Some(p) = p else {
        return "an unknown process".into();
    };
    let name = if p.name.is_empty() { &p.exe } else { &p.name };
    let mut s = format!("{name} (pid {}", p.pid);
    if !p.exe.is_empty() && p.exe != *name {
        s.push_str(&format!(", {}", p.exe));
    }
    s.push(')');
    s
}

fn user_text(e: &Event, p: Option<&ProcessRef>) -> String {
    match p {
        Some(p) if !p.user.is_empty() => format!("{} (uid {})", p.user, p.uid),
        Some(p) if e.user.is_empty() => format!("uid {}", p.uid),
        _ => e.user.clone(),
    }
}

/// "25.0 MB" (1000-based, as `kiroku` prints sizes).
fn volume(n: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// The summary and body of a p2p alert.
pub fn p2p_fired(e: &Event, p: &P2pEvent) -> Fired {
    let host = host_of(e);
    let proc_ = process_text(p.process.as_ref());
    let codes: Vec<&str> = p.reasons.iter().map(|r| r.code.as_str()).collect();
    let reasons: Vec<String> = p
        .reasons
        .iter()
        .map(|r| {
            if r.detail.is_empty() {
                r.code.clone()
            } else {
                format!("{} ({})", r.code, r.detail)
            }
        })
        .collect();
    let hostname = e
        .host
        .as_ref()
        .map(|h| h.hostname.as_str())
        .filter(|h| !h.is_empty())
        .unwrap_or(&e.agent_id);
    // The episode so far, an hour either side.
    let from = kiroku_common::rfc3339_ms(p.first_ms.saturating_sub(3_600_000));
    let to = kiroku_common::rfc3339_ms(p.last_ms.max(p.first_ms).saturating_add(3_600_000));
    let name = p
        .process
        .as_ref()
        .map(|x| if x.name.is_empty() { &x.exe } else { &x.name })
        .filter(|n| !n.is_empty());
    // The host and process names come from the watched machine (a process
    // sets its own name): shell-quoted, so a pasted command cannot run
    // what they contain.
    let mut see = format!(
        "kiroku report network --host {} --from {from} --to {to}",
        shell_quote(hostname)
    );
    if let Some(n) = name {
        see.push_str(&format!(
            "; kiroku search --kind network --process {} --from {from}",
            shell_quote(n)
        ));
    }
    let peers = if p.sample_peers.is_empty() {
        format!("{} distinct", p.peers)
    } else {
        format!(
            "{} distinct, e.g. {}",
            p.peers,
            p.sample_peers
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Fired {
        summary: format!(
            "P2P on {host}: {proc_} — {}; {} peers, {} out, {} in",
            codes.join(", "),
            p.peers,
            volume(p.bytes_out),
            volume(p.bytes_in)
        ),
        body: Details::default()
            .line(
                "what",
                format!("P2P file sharing {} ({})", p.phase, codes.join(", ")),
            )
            .line("where", host)
            .line("process", proc_)
            .line("who", user_text(e, p.process.as_ref()))
            .line("reasons", reasons.join("; "))
            .line("peers", peers)
            .line(
                "volume",
                format!(
                    "{} out, {} in, {} connections",
                    volume(p.bytes_out),
                    volume(p.bytes_in),
                    p.connections
                ),
            )
            .line("info_hash", p.info_hashes.join(", "))
            .line("trackers", p.trackers.join(", "))
            .line(
                "since",
                format!("{} (agent clock)", kiroku_common::rfc3339_ms(p.first_ms)),
            )
            .line("episode", episode_key(p))
            .line("see", format!("{see}; kiroku show {}", e.event_id))
            .text(),
    }
}

impl super::Alerting {
    /// The p2p kind on one stored event (see the module documentation).
    pub(super) fn check_p2p(&self, rule: &Rule, e: &Event) -> Result<Option<Fired>, String> {
        let Some(Kind::P2p(p)) = &e.kind else {
            return Ok(None);
        };
        if !matches!(p.phase.as_str(), "detected" | "update") {
            return Ok(None);
        }
        let wanted = &rule.params.reasons;
        if !wanted.is_empty() && !p.reasons.iter().any(|r| wanted.contains(&r.code)) {
            return Ok(None);
        }
        if !self.first_for(
            "p2p",
            &rule.name,
            &e.agent_id,
            &episode_key(p),
            Some(&e.event_id),
        )? {
            return Ok(None);
        }
        Ok(Some(p2p_fired(e, p)))
    }
}

/// `v` as one POSIX shell word: single-quoted, each `'` as `'\''`.
fn shell_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests;
