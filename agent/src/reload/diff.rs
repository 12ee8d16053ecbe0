//! Pure logic of a reload, table-tested: which settings differ between two
//! configurations, which of them apply live and which need a restart, and
//! the line of the config file a field is on (for errors).

use std::path::Path;

use crate::config::AgentConfig;

/// Settings a reload applies: everything under these keys, except
/// [`RESTART_INSIDE_LIVE`]. `smtp`: new sessions use the new settings,
/// sessions in progress finish with theirs (`smtp.data_min_rate_bytes_per_sec`
/// applies to new sessions' data; which connections count as stalled when
/// slots run out keeps the start value). `files`: file capture is stopped
/// and started again with the new roots and exclusions (see
/// `reload/files.rs`). `custom`: events stamped from then on. `mta_log`: the
/// MTA log followers. `network`: the network capture restarts (issue 21).
const LIVE: &[&str] = &["smtp", "files", "custom", "mta_log", "network"];

/// Settings under a [`LIVE`] key that belong to the listener or a
/// long-lived component and keep their start values until a restart.
const RESTART_INSIDE_LIVE: &[&str] = &[
    "smtp.listen",
    "smtp.max_connections",
    // The incident tracker is shared by every configuration a reload makes
    // (an incident open before a reload closes after it), so its timing
    // stays as the agent started.
    "smtp.incident_quiet_secs",
    "smtp.incident_still_open_secs",
];

/// What changed between two configurations, as dotted field paths
/// (`smtp.upstream`, `files.watch`, `collector.endpoint`), sorted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Applied by a reload.
    pub live: Vec<String>,
    /// Kept at their running value until the agent restarts.
    pub restart: Vec<String>,
}

/// Whether a reload applies a change of `field`.
pub fn is_live(field: &str) -> bool {
    let under = |key: &str| field == key || field.starts_with(&format!("{key}."));
    LIVE.iter().any(|k| under(k)) && !RESTART_INSIDE_LIVE.iter().any(|k| under(k))
}

/// The fields that differ between `old` and `new`, classified.
pub fn changes(old: &AgentConfig, new: &AgentConfig) -> Changes {
    let mut differ = Vec::new();
    match (toml::Value::try_from(old), toml::Value::try_from(new)) {
        (Ok(a), Ok(b)) => compare("", Some(&a), Some(&b), &mut differ),
        // Not expected (every field serialises); then everything is
        // treated as changed rather than nothing.
        _ => differ.extend(["smtp", "files", "custom", "data_dir"].map(String::from)),
    }
    differ.sort();
    let (live, restart) = differ.into_iter().partition(|f| is_live(f));
    Changes { live, restart }
}

/// Collects the paths of the leaves (scalars, arrays, a table present on
/// one side only) that differ.
fn compare(at: &str, a: Option<&toml::Value>, b: Option<&toml::Value>, out: &mut Vec<String>) {
    match (a, b) {
        (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                compare(&path, a.get(k), b.get(k), out);
            }
        }
        (a, b) if a == b => {}
        _ => out.push(at.to_owned()),
    }
}

/// The 1-based line of `field` (dotted, with `[i]` for an element of an
/// array, e.g. `files.exclude[1]` or `mta_log[0].path`) in the TOML `text`:
/// the line of its key, else of the nearest enclosing table or key that is
/// there (a required field that is missing: its section's header). None
/// when `text` does not parse or nothing of the path is in it.
pub fn line_of(text: &str, field: &str) -> Option<usize> {
    let root = toml::de::DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut found: Option<usize> = None;
    for part in field.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some((k, v)) = table.get_key_value(key) else {
            break;
        };
        found = Some(k.span().start);
        let mut value = v.get_ref();
        if let (toml::de::DeValue::Array(items), Some(i)) = (value, index)
            && let Some(item) = items.get(i)
        {
            found = Some(item.span().start);
            value = item.get_ref();
        }
        match value {
            toml::de::DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    found.map(|at| text[..at.min(text.len())].matches('\n').count() + 1)
}

/// A check of the config file `path` that failed: names the file, the line
/// (when the field or its section is in `text`) and the field.
pub fn field_error(path: &Path, text: &str, field: &str, message: String) -> anyhow::Error {
    match line_of(text, field) {
        Some(line) => anyhow::anyhow!(
            "invalid config file {}, line {line}, field `{field}`: {message}",
            path.display()
        ),
        None => anyhow::anyhow!(
            "invalid config file {}: field `{field}`: {message}",
            path.display()
        ),
    }
}

/// An error on one log line: TOML's multi-line report (a source snippet
/// with a caret under the fault) keeps its text lines, joined with ": ".
pub fn one_line(error: &str) -> String {
    error
        .lines()
        .map(str::trim)
        .filter(|l| {
            let snippet = l.starts_with('|')
                || l.split_once('|').is_some_and(|(n, _)| {
                    !n.trim().is_empty() && n.trim().chars().all(|c| c.is_ascii_digit())
                });
            !l.is_empty() && !snippet
        })
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "data_dir = \"d\"\n[collector]\nendpoint = \"https://x:1\"\n[collector.tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";

    fn cfg(extra: &str) -> AgentConfig {
        AgentConfig::parse(
            Path::new("/etc/kiroku/agent.toml"),
            &format!("{BASE}{extra}"),
        )
        .unwrap_or_else(|e| panic!("{extra}: {e:#}"))
    }

    #[test]
    fn changes_are_classified_live_or_restart() {
        let relay_a = "[smtp]\nmode = \"relay\"\nupstream = \"127.0.0.1:25\"\n";
        let relay_b = "[smtp]\nmode = \"relay\"\nupstream = \"127.0.0.1:26\"\n";
        for (old, new, live, restart) in [
            ("", "", vec![], vec![]),
            (relay_a, relay_b, vec!["smtp.upstream"], vec![]),
            (
                relay_a,
                "[smtp]\nmode = \"relay\"\nupstream = \"127.0.0.1:25\"\nlisten = [\"127.0.0.1:2600\"]\nmax_connections = 5\n",
                vec![],
                vec!["smtp.listen", "smtp.max_connections"],
            ),
            ("", "[files]\nwatch = [\"/srv\"]\n", vec!["files"], vec![]),
            (
                "[files]\nwatch = [\"/srv\"]\n",
                "[files]\nwatch = [\"/srv\", \"/home\"]\nexclude = [\"**/*.swp\"]\n",
                vec!["files.exclude", "files.watch"],
                vec![],
            ),
            (
                "",
                "[custom]\nsite = \"tokyo\"\n",
                vec!["custom.site"],
                vec![],
            ),
            (
                "[custom]\nsite = \"tokyo\"\n",
                "[custom]\nsite = \"osaka\"\n",
                vec!["custom.site"],
                vec![],
            ),
            (
                "",
                "[buffer]\nmax_bytes = 1000000\n[host]\ndomain = \"corp\"\n",
                vec![],
                vec!["buffer.max_bytes", "host.domain"],
            ),
        ] {
            let got = changes(&cfg(old), &cfg(new));
            assert_eq!(got.live, live, "{old} -> {new}");
            assert_eq!(got.restart, restart, "{old} -> {new}");
        }
        let moved = BASE
            .replace("https://x:1", "https://y:2")
            .replace("\"d\"", "\"e\"");
        let got = changes(
            &cfg(""),
            &AgentConfig::parse(Path::new("/etc/kiroku/agent.toml"), &moved).expect("parse"),
        );
        assert_eq!(got.restart, vec!["collector.endpoint", "data_dir"]);
        assert!(got.live.is_empty());
    }

    #[test]
    fn live_fields() {
        for (field, live) in [
            ("smtp", true),
            ("smtp.upstream", true),
            ("smtp.upstream_auth.username", true),
            ("smtp.listen", false),
            ("smtp.max_connections", false),
            ("smtpx", false),
            ("files.watch", true),
            ("custom.site", true),
            ("mta_log", true),
            ("collector.tls.cert", false),
            ("buffer.when_full", false),
            ("data_dir", false),
        ] {
            assert_eq!(is_live(field), live, "{field}");
        }
    }

    #[test]
    fn fields_are_found_on_their_line() {
        let text = "data_dir = \"d\"\n\n[smtp]\nmode = \"relay\"\n\n[files]\nwatch = [\"/a\"]\nexclude = [\n  \"ok\",\n  \"[bad\",\n]\n\n[[mta_log]]\npath = \"/x\"\n[[mta_log]]\npath = \"/y\"\n";
        for (field, line) in [
            ("data_dir", Some(1)),
            ("smtp.mode", Some(4)),
            // Missing: the section's header.
            ("smtp.upstream", Some(3)),
            ("files.watch", Some(7)),
            ("files.exclude", Some(8)),
            ("files.exclude[1]", Some(10)),
            ("mta_log[1].path", Some(16)),
            ("mta_log[0].path", Some(14)),
            ("collector.endpoint", None),
        ] {
            assert_eq!(line_of(text, field), line, "{field}");
        }
        assert_eq!(line_of("not toml [", "data_dir"), None);
    }

    #[test]
    fn errors_fit_on_one_line() {
        let toml = "invalid config file /a.toml: TOML parse error at line 12, column 16\n   |\n12 | upstream_tls = \"sometimes\"\n   |                ^^^^^^^^^^^\nunknown variant `sometimes`, expected one of `off`, `required`\n";
        assert_eq!(
            one_line(toml),
            "invalid config file /a.toml: TOML parse error at line 12, column 16: unknown variant `sometimes`, expected one of `off`, `required`"
        );
        assert_eq!(one_line("plain | text"), "plain | text");
    }

    #[test]
    fn refused_checks_name_file_line_and_field() {
        let text = format!("{BASE}[smtp]\nmode = \"relay\"\n");
        let e = AgentConfig::parse(Path::new("/etc/kiroku/agent.toml"), &text)
            .expect_err("relay without upstream")
            .to_string();
        assert!(
            e.contains("/etc/kiroku/agent.toml, line 8, field `smtp.upstream`"),
            "{e}"
        );
        let text = format!("{BASE}[files]\nwatch = [\"/a\"]\nexclude = [\"ok\", \"a[\"]\n");
        let e = AgentConfig::parse(Path::new("/etc/kiroku/agent.toml"), &text)
            .expect_err("bad glob")
            .to_string();
        assert!(e.contains("line 10, field `files.exclude[1]`"), "{e}");
        // TOML's own errors carry the line too.
        let text = format!("{BASE}[smtp]\nupstream_tls = \"sometimes\"\n");
        let e = AgentConfig::parse(Path::new("/etc/kiroku/agent.toml"), &text)
            .expect_err("bad enum")
            .to_string();
        assert!(e.contains("line 9") && e.contains("sometimes"), "{e}");
    }
}
