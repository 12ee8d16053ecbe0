//! Outside input echoed in error messages and logs: escaped (control
//! characters and quotes shown as escapes, so a message cannot forge log
//! lines or terminal output) and cut to a bounded length, so a client
//! sending a megabyte of text gets back a short error rather than its
//! megabyte, and the log does not grow by what a caller chooses.
//!
//! [`terminal`] is the same idea for what the CLI prints: every string that
//! came from a mail, a file name or an agent goes through it, so a subject
//! cannot clear the investigator's screen, move the cursor, or forge a line
//! such as `outcome: rejected`.

use std::borrow::Cow;
use std::fmt::Write;

/// How much of an input an error message quotes by default.
pub const QUOTE_MAX: usize = 120;

/// `s` in double quotes with Rust's escapes (`"a\nb"`), at most `max`
/// characters of it; a cut one ends in `…` and says how long it was.
pub fn quote_clipped(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}

/// [`quote_clipped`] at [`QUOTE_MAX`].
pub fn quote(s: &str) -> String {
    quote_clipped(s, QUOTE_MAX)
}

/// Would this character change what a terminal shows beyond itself? C0
/// and C1 controls (ESC, BEL, CR, LF, …), DEL, and the bidirectional
/// formatting characters that reorder the text around them (embeddings
/// and overrides U+202A–U+202E, isolates U+2066–U+2069, the marks U+200E,
/// U+200F and U+061C).
fn unsafe_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}'
        )
}

/// `s` as the CLI prints it: every character [`unsafe_on_terminal`]
/// shown as an escape (`\n`, `\r`, `\t`, `\u{1b}`, `\u{202e}`).
/// Backslashes are left as they are, so Windows paths stay readable; a
/// subject can therefore *look* like it holds an escape, which is harmless
/// (`--json` tells the exact text). Untouched (borrowed) when there is
/// nothing to escape, the common case.
pub fn terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(unsafe_on_terminal) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if unsafe_on_terminal(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_shows_controls_as_escapes() {
        // (input, as printed)
        for (input, want) in [
            ("plain", "plain"),
            ("日本語の件名", "日本語の件名"),
            ("a\nb", "a\\nb"),
            ("a\r\noutcome: rejected", "a\\r\\noutcome: rejected"),
            ("tab\there", "tab\\there"),
            ("\u{1b}[2J\u{1b}[H", "\\u{1b}[2J\\u{1b}[H"),
            ("bell\u{7}", "bell\\u{7}"),
            ("nul\0", "nul\\u{0}"),
            ("del\u{7f}", "del\\u{7f}"),
            // C1: CSI, a one-character ESC [.
            ("c1\u{9b}31m", "c1\\u{9b}31m"),
            ("invoice\u{202e}fdp.exe", "invoice\\u{202e}fdp.exe"),
            (
                "\u{202a}\u{202b}\u{202c}\u{202d}",
                "\\u{202a}\\u{202b}\\u{202c}\\u{202d}",
            ),
            ("\u{2066}x\u{2069}", "\\u{2066}x\\u{2069}"),
            ("\u{2067}\u{2068}", "\\u{2067}\\u{2068}"),
            ("\u{200e}\u{200f}\u{61c}", "\\u{200e}\\u{200f}\\u{61c}"),
            // Backslashes stay as typed (Windows paths).
            ("C:\\temp\\n.txt", "C:\\temp\\n.txt"),
            // Other format characters print as themselves.
            ("zero\u{200b}width", "zero\u{200b}width"),
        ] {
            assert_eq!(terminal(input), want, "{input:?}");
            assert!(
                !terminal(input).chars().any(unsafe_on_terminal),
                "{input:?}"
            );
        }
        assert!(matches!(terminal("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn short_inputs_are_quoted_whole_and_long_ones_cut() {
        assert_eq!(quote("a\nb\u{1b}[31m"), r#""a\nb\u{1b}[31m""#);
        assert_eq!(quote_clipped("héllo", 5), r#""héllo""#);
        assert_eq!(quote_clipped("héllo!", 5), r#""héllo"… (7 bytes)"#);
        let long = "(".repeat(3000);
        let q = quote(&long);
        assert!(q.len() < 200 && q.ends_with("… (3000 bytes)"), "{q}");
    }
}
