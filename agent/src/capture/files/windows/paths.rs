//! Windows paths as strings, compared as Windows does: `\` and `/` are
//! the same separator, case does not matter. Pure (string-based), so it is
//! tested on any system.

/// The volume a path lies on as Windows names it: `C:\` for a
/// drive-letter path, `\\server\share\` for a UNC one; empty otherwise.
pub fn volume_root(path: &str) -> String {
    let p = path.replace('/', "\\");
    let b = p.as_bytes();
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':' {
        return format!("{}:\\", char::from(b[0].to_ascii_uppercase()));
    }
    if let Some(rest) = p.strip_prefix("\\\\") {
        let mut parts = rest.split('\\').filter(|s| !s.is_empty());
        if let (Some(server), Some(share)) = (parts.next(), parts.next()) {
            return format!("\\\\{server}\\{share}\\");
        }
    }
    String::new()
}

/// Whether `path` is `root` or lies below it.
pub fn is_under(path: &str, root: &str) -> bool {
    let key = |s: &str| s.replace('/', "\\").to_lowercase();
    let (p, r) = (key(path), key(root));
    let r = r.trim_end_matches('\\');
    p.strip_prefix(r)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes() {
        let cases = [
            ("C:\\Users\\alice\\a.txt", "C:\\"),
            ("e:/copy/a.txt", "E:\\"),
            ("E:\\", "E:\\"),
            ("\\\\fs01\\share\\dept\\x.xlsx", "\\\\fs01\\share\\"),
            ("\\\\fs01", ""),
            ("relative\\x", ""),
        ];
        for (p, want) in cases {
            assert_eq!(volume_root(p), want, "{p}");
        }
    }

    #[test]
    fn under() {
        let cases = [
            ("E:\\docs\\a.txt", "E:\\", true),
            ("e:\\DOCS\\a.txt", "E:\\docs", true),
            ("E:/docs/a.txt", "e:\\docs\\", true),
            ("E:\\docs", "E:\\docs", true),
            ("E:\\docs2\\a.txt", "E:\\docs", false),
            ("F:\\docs\\a.txt", "E:\\", false),
            ("Z:\\tmp\\usb\\x", "Z:\\tmp\\usb", true),
        ];
        for (p, root, want) in cases {
            assert_eq!(is_under(p, root), want, "{p} under {root}");
        }
    }
}
