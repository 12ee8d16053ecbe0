//! What the collector derived from a mail's content (its annotations), as
//! `kiroku show` prints it below the event: every attachment and every file
//! found inside one, with its real type, a type mismatch, the members of an
//! archive, encryption, text status; the derived tags, the signer, links.
//!
//! Like the detail view, every line passes through `terminal`: names inside
//! archives and attached mails come from outside.

use kiroku_common::quote::terminal;
use kiroku_proto::{Annotations, AttachmentAnalysis};

use crate::output::count;

/// Members of one archive listed before "… and n more".
const MEMBERS_SHOWN: usize = 50;

/// The annotations as detail lines; empty when there are none.
pub fn detail(a: &Annotations) -> String {
    if a.attachments.is_empty() && a.tags.is_empty() && a.links.is_empty() && a.signer.is_empty() {
        return String::new();
    }
    let mut out = String::from("\nanalysis (by the collector):\n");
    let mut line = |k: &str, v: &str| {
        if !v.is_empty() {
            out.push_str(&format!("{:>16}: {}\n", terminal(k), terminal(v)));
        }
    };
    line("derived tags", &a.tags.join(", "));
    line("signer", &a.signer);
    for l in &a.links {
        line("linked", &format!("{} ({})", l.event_id, l.reason));
    }
    for f in &a.attachments {
        file(f, &mut line);
    }
    out
}

/// Where content `sha256` sits inside the mail's attachments
/// ("fwd.eml/secret.txt", "plan.zip/docs/a.xlsx"): for `kiroku trace`.
pub fn paths_with(a: &Annotations, sha256: &str) -> Vec<String> {
    let mut out = Vec::new();
    for f in &a.attachments {
        let whole = if f.path.is_empty() {
            f.name.clone()
        } else {
            format!("{}/{}", f.path, f.name)
        };
        if !f.path.is_empty() && f.sha256 == sha256 {
            out.push(whole.clone());
        }
        if f.container != "message" && f.container != "tnef" {
            for m in f.members.iter().filter(|m| m.sha256 == sha256) {
                out.push(format!("{whole}/{}", m.path));
            }
        }
    }
    out
}

fn file(f: &AttachmentAnalysis, line: &mut impl FnMut(&str, &str)) {
    let whole = if f.path.is_empty() {
        f.name.clone()
    } else {
        format!("{}/{}", f.path, f.name)
    };
    let mut head = format!("{whole} ({}", count(f.size, "byte", "bytes"));
    if !f.detected_type.is_empty() {
        head.push_str(&format!(", is {}", f.detected_type));
    }
    if !f.declared_type.is_empty() && f.declared_type != f.detected_type {
        head.push_str(&format!(", declared {}", f.declared_type));
    }
    head.push(')');
    line(
        if f.path.is_empty() {
            "attachment"
        } else {
            "inside"
        },
        &head,
    );
    if !f.path.is_empty() {
        line("  sha256", &f.sha256);
    }
    line("  TYPE MISMATCH", &f.type_mismatch);
    if !f.container.is_empty() {
        line(
            "  container",
            &format!(
                "{}, {}",
                f.container,
                count(f.members.len() as u64, "file", "files")
            ),
        );
    }
    if f.encrypted {
        line(
            "  ENCRYPTED",
            if f.encryption.is_empty() {
                "yes"
            } else {
                &f.encryption
            },
        );
    }
    line("  listing", &f.members_status);
    // Files of attached mail and TNEF are entries of their own; archive
    // members are listed here.
    if f.container != "message" && f.container != "tnef" {
        for m in f.members.iter().take(MEMBERS_SHOWN) {
            let mut s = format!("{} ({}", m.path, count(m.size, "byte", "bytes"));
            if !m.detected_type.is_empty() {
                s.push_str(&format!(", {}", m.detected_type));
            }
            if m.encrypted {
                s.push_str(", encrypted");
            }
            s.push(')');
            if !m.sha256.is_empty() {
                s.push_str(&format!(" sha256 {}", m.sha256));
            }
            if !m.status.is_empty() {
                s.push_str(&format!(" [{}]", m.status));
            }
            line("  member", &s);
        }
        if f.members.len() > MEMBERS_SHOWN {
            line(
                "  member",
                &format!(
                    "… and {} more (--json lists all)",
                    f.members.len() - MEMBERS_SHOWN
                ),
            );
        }
    }
    if !f.text_status.is_empty() && f.text_status != "none" {
        let mut t = f.text_status.clone();
        if f.text_bytes > 0 {
            t.push_str(&format!(" ({})", count(f.text_bytes, "byte", "bytes")));
        }
        line("  text", &t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiroku_proto::ArchiveMember;

    #[test]
    fn shows_nested_files_members_and_mismatches_safely() {
        let a = Annotations {
            event_id: "a/s/1".into(),
            tags: vec!["type-mismatch".into()],
            signer: "Alice <alice@corp.example>".into(),
            attachments: vec![
                AttachmentAnalysis {
                    name: "report.pdf".into(),
                    size: 10,
                    declared_type: "application/pdf".into(),
                    detected_type: "application/zip".into(),
                    type_mismatch: "name .pdf, content application/zip".into(),
                    container: "zip".into(),
                    members: vec![ArchiveMember {
                        path: "evil\u{202e}fdp.exe".into(),
                        size: 3,
                        sha256: "ab".repeat(32),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
                AttachmentAnalysis {
                    path: "fwd.eml".into(),
                    name: "secret.txt".into(),
                    sha256: "cd".repeat(32),
                    size: 1,
                    detected_type: "text/plain".into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let s = detail(&a);
        for want in [
            "derived tags: type-mismatch",
            "signer: Alice <alice@corp.example>",
            "attachment: report.pdf (10 bytes, is application/zip, declared application/pdf)",
            "TYPE MISMATCH: name .pdf, content application/zip",
            "container: zip, 1 file",
            "member: evil\\u{202e}fdp.exe (3 bytes)",
            "inside: fwd.eml/secret.txt (1 byte, is text/plain)",
        ] {
            assert!(s.contains(want), "{want:?} missing in\n{s}");
        }
        assert!(!s.contains('\u{202e}'));
        assert_eq!(detail(&Annotations::default()), "");
    }
}
