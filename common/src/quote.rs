//! Outside input echoed in error messages and logs: escaped (control
//! characters and quotes shown as escapes, so a message cannot forge log
//! lines or terminal output) and cut to a bounded length, so a client
//! sending a megabyte of text gets back a short error rather than its
//! megabyte, and the log does not grow by what a caller chooses.

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

#[cfg(test)]
mod tests {
    use super::*;

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
