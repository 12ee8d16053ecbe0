//! Issue 21: the search flags of network and P2P records (`--kind network`,
//! `--kind p2p`), the request fields 50–59 they fill, and their checks,
//! which name the flag before anything is sent (the collector checks the
//! same values again, with the same vocabulary).

use kiroku_common::vocabulary::network as vocab;
use kiroku_proto::SearchRequest;

/// The filters of network and P2P records.
#[derive(clap::Args, Debug, Default)]
pub struct NetworkArgs {
    /// Network and P2P records of this process: its name, executable path
    /// or pid (aria2c, /usr/bin/aria2c, 4242).
    #[arg(long)]
    pub process: Option<String>,
    /// Network records with this peer, P2P episodes that sampled it: an
    /// address or network (198.51.100.7, 10.0.0.0/8, 2001:db8::/32).
    #[arg(long, value_name = "IP|CIDR")]
    pub remote_ip: Option<String>,
    /// Network records with this local or remote port.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub port: Option<u32>,
    /// Network records whose bytes in + out (the flow's totals as of the
    /// record) are at least this: 500K, 10M, 1.5G (1000-based; KiB, MiB,
    /// GiB are 1024-based).
    #[arg(long, value_name = "SIZE", value_parser = byte_size)]
    pub min_bytes: Option<u64>,
    /// Network records of flows that lasted at least this long as of the
    /// record, P2P episodes too: 5s, 2m, 1h.
    #[arg(long, value_name = "SPAN", value_parser = super::delay)]
    pub min_duration: Option<u64>,
    /// tcp or udp.
    #[arg(long)]
    pub protocol: Option<String>,
    /// P2P episodes with this reason: known_client, many_peers, dht, utp,
    /// tracker_announce, bt_handshake.
    #[arg(long)]
    pub p2p_reason: Option<String>,
    /// Flows and P2P episodes that carried this BitTorrent info_hash (40 or
    /// 64 hex digits).
    #[arg(long)]
    pub info_hash: Option<String>,
    /// outbound, inbound, listening or unknown (a UDP socket with no fixed
    /// peer).
    #[arg(long)]
    pub net_direction: Option<String>,
    /// A network record's phase (open, update, close, listen_open,
    /// listen_close, summary) or a P2P episode's (detected, update, ended).
    #[arg(long)]
    pub net_phase: Option<String>,
}

impl NetworkArgs {
    /// Fills fields 50–59 of `r`, each value checked (the error names the
    /// flag).
    pub fn apply(self, r: &mut SearchRequest) -> anyhow::Result<()> {
        let flag = |name: &str, res: Result<String, String>| {
            res.map_err(|m| anyhow::anyhow!("--{name}: {m}"))
        };
        let checked =
            |name: &str, v: Option<String>, check: fn(&str) -> Result<String, String>| match v {
                Some(v) if !v.trim().is_empty() => flag(name, check(&v)),
                _ => Ok(String::new()),
            };
        r.process = self.process.unwrap_or_default().trim().to_owned();
        if let Some(ip) = self.remote_ip {
            kiroku_common::search::ip_range(&ip)
                .map_err(|m| anyhow::anyhow!("--remote-ip: {m}"))?;
            r.remote_ip = ip.trim().to_owned();
        }
        r.port = self.port.unwrap_or(0);
        r.min_bytes = self.min_bytes.unwrap_or(0);
        r.min_duration_ms = self.min_duration.unwrap_or(0);
        r.protocol = checked("protocol", self.protocol, vocab::protocol)?;
        r.p2p_reason = checked("p2p-reason", self.p2p_reason, vocab::p2p_reason)?;
        r.info_hash = checked("info-hash", self.info_hash, vocab::info_hash)?;
        r.net_direction = checked("net-direction", self.net_direction, vocab::direction)?;
        r.net_phase = checked("net-phase", self.net_phase, vocab::phase)?;
        Ok(())
    }
}

/// `--min-bytes 10M` in bytes: a number (a fraction allowed) and a unit
/// K, M, G, T (1000-based, an optional B) or KiB, MiB, GiB, TiB
/// (1024-based); no unit: bytes.
pub fn byte_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number of bytes, e.g. 500K, 10M or 1.5G"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let mult: f64 = match unit.as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use K, M, G, T or KiB, MiB, GiB, TiB)"
            ));
        }
    };
    let bytes = (n * mult).round();
    if !(1.0..=u64::MAX as f64).contains(&bytes) {
        return Err(format!("{s:?}: must be at least 1 byte"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        for (s, want) in [
            ("123", Ok(123)),
            ("10M", Ok(10_000_000)),
            ("1G", Ok(1_000_000_000)),
            ("1.5g", Ok(1_500_000_000)),
            ("500 KB", Ok(500_000)),
            ("2MiB", Ok(2 * 1024 * 1024)),
            ("1x", Err("unknown unit")),
            ("M", Err("expected a number")),
            ("0", Err("at least 1 byte")),
        ] {
            match (byte_size(s), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, w, "{s}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{s}: {e}"),
                (got, want) => panic!("{s}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn bad_values_name_the_flag() {
        let args = |f: fn(&mut NetworkArgs)| {
            let mut a = NetworkArgs::default();
            f(&mut a);
            a
        };
        let cases: Vec<(NetworkArgs, &str)> = vec![
            (
                args(|a| a.remote_ip = Some("10.0.0.0/40".into())),
                "--remote-ip",
            ),
            (args(|a| a.protocol = Some("icmp".into())), "--protocol"),
            (args(|a| a.p2p_reason = Some("x".into())), "--p2p-reason"),
            (args(|a| a.info_hash = Some("abc".into())), "--info-hash"),
            (
                args(|a| a.net_direction = Some("up".into())),
                "--net-direction",
            ),
            (args(|a| a.net_phase = Some("opened".into())), "--net-phase"),
        ];
        for (a, flag) in cases {
            let e = a
                .apply(&mut SearchRequest::default())
                .expect_err(flag)
                .to_string();
            assert!(e.starts_with(flag), "{e}");
        }
        let mut r = SearchRequest::default();
        args(|a| {
            a.process = Some(" aria2c ".into());
            a.protocol = Some("TCP".into());
            a.info_hash = Some("AB".repeat(20));
            a.net_phase = Some("detected".into());
        })
        .apply(&mut r)
        .expect("valid values");
        assert_eq!(
            (
                r.process.as_str(),
                r.protocol.as_str(),
                r.net_phase.as_str()
            ),
            ("aria2c", "tcp", "detected")
        );
        assert_eq!(r.info_hash, "ab".repeat(20));
    }
}
