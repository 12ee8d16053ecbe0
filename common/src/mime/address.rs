//! Address lists (`From`, `To`, `Cc`...), read leniently: empty elements
//! (`To: , carol@example.com`), comments and entries without a domain do
//! not lose the other addresses. mailparse parses well-formed lists and
//! each entry; this module splits the list first, since mailparse reads a
//! leading empty element as part of the first address and refuses a whole
//! list for one bad entry.

use mailparse::MailAddr;

/// The addresses of one field's unfolded value, in order. `notes` gets
/// what was repaired; `errors` what mailparse refused (the entry was then
/// read without it).
pub fn parse(value: &[u8], notes: &mut Vec<String>, errors: &mut Vec<String>) -> Vec<String> {
    let text = match std::str::from_utf8(value) {
        Ok(s) => s.to_owned(),
        Err(_) => value.iter().map(|&b| char::from(b)).collect(),
    };
    let entries = top_level_entries(&text);
    let empty = entries
        .iter()
        .filter(|e| without_comments(e).trim().is_empty())
        .count();
    if empty > 0 && entries.len() > 1 {
        notes.push(format!(
            "{empty} empty element(s) in the address list skipped"
        ));
    }
    let whole = entries.len() > 1 && empty == 0;
    if whole || entries.len() == 1 {
        match mailparse::addrparse(&text) {
            Ok(list) => return flatten(&list),
            Err(e) => errors.push(e.to_string()),
        }
    }
    let mut out = Vec::new();
    for entry in entries {
        if without_comments(entry).trim().is_empty() {
            continue;
        }
        out.extend(entry_addresses(entry));
    }
    out
}

fn flatten(list: &mailparse::MailAddrList) -> Vec<String> {
    let mut out = Vec::new();
    for a in list.iter() {
        match a {
            MailAddr::Single(s) => out.push(s.addr.clone()),
            MailAddr::Group(g) => out.extend(g.addrs.iter().map(|s| s.addr.clone())),
        }
    }
    out
}

/// One entry: mailparse's reading, else its `<...>` content or, without
/// angle brackets, its text without comments when that is one word (a
/// local part without a domain, as Python's `email` package reads it too).
fn entry_addresses(entry: &str) -> Vec<String> {
    // A group's name and end (`name: a, b;`) are not addresses.
    let entry = entry.trim().trim_end_matches(';');
    let entry = match entry.split_once(':') {
        Some((name, rest)) if !name.contains(['<', '"', '(']) => rest,
        _ => entry,
    };
    if without_comments(entry).trim().is_empty() {
        return Vec::new();
    }
    if let Ok(list) = mailparse::addrparse(entry) {
        return flatten(&list);
    }
    let bare = without_comments(entry);
    let addr = match (bare.rfind('<'), bare.rfind('>')) {
        (Some(open), Some(close)) if open < close => bare[open + 1..close].trim().to_owned(),
        _ => bare.trim().to_owned(),
    };
    if !addr.is_empty() && !addr.contains(|c: char| c.is_whitespace() || "<>\",;:".contains(c)) {
        vec![addr]
    } else {
        Vec::new()
    }
}

/// `value` split at the commas outside quoted strings, comments and angle
/// brackets.
pub fn top_level_entries(value: &str) -> Vec<&str> {
    let (mut entries, mut start) = (Vec::new(), 0);
    let (mut quoted, mut escaped, mut comment, mut angle) = (false, false, 0u32, false);
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted || comment > 0 => escaped = true,
            '"' if comment == 0 => quoted = !quoted,
            '(' if !quoted => comment += 1,
            ')' if !quoted => comment = comment.saturating_sub(1),
            '<' if !quoted && comment == 0 => angle = true,
            '>' if !quoted && comment == 0 => angle = false,
            ',' if !quoted && comment == 0 && !angle => {
                entries.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    entries.push(&value[start..]);
    entries
}

/// `entry` without its comments (outside quoted strings).
pub fn without_comments(entry: &str) -> String {
    let mut out = String::with_capacity(entry.len());
    let (mut quoted, mut escaped, mut comment) = (false, false, 0u32);
    for c in entry.chars() {
        if escaped {
            escaped = false;
            if comment == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' if quoted || comment > 0 => escaped = true,
            '(' if !quoted => comment += 1,
            ')' if !quoted && comment > 0 => comment -= 1,
            _ if comment > 0 => {}
            '"' => {
                quoted = !quoted;
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}
