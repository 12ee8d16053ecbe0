//! `[network]` settings checked at start and at each reload: an error
//! names the field and the range to use.

use super::config::NetworkConfig;

/// (field, message) of the first setting out of range.
pub fn validate(cfg: &NetworkConfig) -> Result<(), (String, String)> {
    let range = |field: &str, v: u64, lo: u64, hi: u64, unit: &str, default: u64| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err((
                format!("network.{field}"),
                format!("{v} is out of range, use {lo} to {hi} ({unit}; default {default})"),
            ))
        }
    };
    let d = NetworkConfig::default();
    range(
        "dump_interval_ms",
        cfg.dump_interval_ms,
        100,
        60_000,
        "milliseconds",
        d.dump_interval_ms,
    )?;
    range(
        "update_secs",
        cfg.update_secs,
        1,
        86_400,
        "seconds",
        d.update_secs,
    )?;
    range(
        "summary_secs",
        cfg.summary_secs,
        1,
        3_600,
        "seconds",
        d.summary_secs,
    )?;
    range(
        "max_records_per_sec",
        u64::from(cfg.max_records_per_sec),
        1,
        1_000_000,
        "records per second",
        u64::from(d.max_records_per_sec),
    )?;
    range(
        "max_flows",
        cfg.max_flows as u64,
        16,
        10_000_000,
        "flows",
        d.max_flows as u64,
    )?;
    range(
        "reverse_dns_per_sec",
        u64::from(cfg.reverse_dns_per_sec),
        0,
        1_000,
        "lookups per second",
        u64::from(d.reverse_dns_per_sec),
    )?;
    super::flows::exclude::validate(&cfg.exclude)?;
    let p = &cfg.p2p;
    let dp = &d.p2p;
    range(
        "p2p.min_peers",
        u64::from(p.min_peers),
        2,
        100_000,
        "peers",
        u64::from(dp.min_peers),
    )?;
    range(
        "p2p.window_secs",
        p.window_secs,
        1,
        86_400,
        "seconds",
        dp.window_secs,
    )?;
    range(
        "p2p.quiet_secs",
        p.quiet_secs,
        1,
        86_400,
        "seconds",
        dp.quiet_secs,
    )?;
    range(
        "p2p.update_secs",
        p.update_secs,
        1,
        86_400,
        "seconds",
        dp.update_secs,
    )?;
    if let Some(i) = p.clients.iter().position(|c| c.trim().is_empty()) {
        return Err((
            format!("network.p2p.clients[{i}]"),
            "empty; give an executable name such as \"qbittorrent-nox\"".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_each_bad_value_names_its_field() {
        assert_eq!(validate(&NetworkConfig::default()), Ok(()));
        let cases: Vec<(NetworkConfig, &str)> = vec![
            (
                NetworkConfig {
                    dump_interval_ms: 10,
                    ..Default::default()
                },
                "network.dump_interval_ms",
            ),
            (
                NetworkConfig {
                    update_secs: 0,
                    ..Default::default()
                },
                "network.update_secs",
            ),
            (
                NetworkConfig {
                    summary_secs: 0,
                    ..Default::default()
                },
                "network.summary_secs",
            ),
            (
                NetworkConfig {
                    max_records_per_sec: 0,
                    ..Default::default()
                },
                "network.max_records_per_sec",
            ),
            (
                NetworkConfig {
                    max_flows: 1,
                    ..Default::default()
                },
                "network.max_flows",
            ),
            (
                NetworkConfig {
                    exclude: vec![super::super::config::Exclusion {
                        remote: None,
                        port: None,
                        process: None,
                    }],
                    ..Default::default()
                },
                "network.exclude[0]",
            ),
            (
                NetworkConfig {
                    p2p: super::super::config::P2pConfig {
                        min_peers: 1,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "network.p2p.min_peers",
            ),
        ];
        for (cfg, field) in cases {
            let (f, message) = validate(&cfg).expect_err("test value");
            assert_eq!(f, field);
            assert!(
                message.contains("default") || message.contains("entry"),
                "{message}"
            );
        }
    }
}
