//! What the values of the search filters mean: a reply code or class, a
//! client address or network, an address pattern. The CLI checks a flag's
//! value with these before it sends a request (so the error names the
//! flag), and the collector checks every request with the same code (so a
//! gRPC client gets the same answer).

use std::net::{IpAddr, Ipv6Addr};

use crate::quote::quote;

/// Most `*`/`?` wildcards in one address pattern: each is a loop of the
/// automaton the index runs over its terms.
pub const MAX_WILDCARDS: usize = 8;

/// A reply code (`550`) or class (`5xx`, `4xx`) as the inclusive range of
/// codes it stands for.
pub fn reply_codes(v: &str) -> Result<(u32, u32), String> {
    let s = v.trim().to_lowercase();
    let b = s.as_bytes();
    let class_ok = |c: u8| (b'2'..=b'5').contains(&c);
    match b {
        [c, b'x', b'x'] if class_ok(*c) => {
            let lo = u32::from(c - b'0') * 100;
            Ok((lo, lo + 99))
        }
        [c, d, e] if class_ok(*c) && d.is_ascii_digit() && e.is_ascii_digit() => {
            let code: u32 = s.parse().map_err(|_| bad_reply(v))?;
            Ok((code, code))
        }
        _ => Err(bad_reply(v)),
    }
}

fn bad_reply(v: &str) -> String {
    format!(
        "{} is not a reply code or class: write a code such as 550 or a class such as 4xx (2xx to 5xx)",
        quote(v)
    )
}

/// A client address (`10.1.2.3`, `2001:db8::1`) or network in CIDR
/// notation (`10.1.0.0/16`, `2001:db8::/32`) as the inclusive range of
/// IPv6 addresses the index holds (an IPv4 address is indexed as its
/// IPv4-mapped IPv6 address, `::ffff:10.1.2.3`).
pub fn ip_range(v: &str) -> Result<(Ipv6Addr, Ipv6Addr), String> {
    let s = v.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        let ip = as_v6(ip);
        return Ok((ip, ip));
    }
    let net: ipnet::IpNet = s.parse().map_err(|_| {
        format!(
            "{} is not an IP address or network: write 10.1.2.3, 10.1.0.0/16 or 2001:db8::/32",
            quote(v)
        )
    })?;
    Ok((as_v6(net.network()), as_v6(net.broadcast())))
}

/// An address as the index holds it: IPv4 as IPv4-mapped IPv6.
pub fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// An address filter: an exact address, every address of one domain
/// (`*@gmail.com`, exactly that domain), or a wildcard pattern
/// (`bob*@x.com`, `*@*.example.com`) as an anchored regular expression
/// over the lower-cased addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressPattern {
    Exact(String),
    Domain(String),
    Regex(String),
}

impl AddressPattern {
    pub fn parse(v: &str) -> Result<AddressPattern, String> {
        let s = v.trim().to_lowercase();
        let wildcards = s.chars().filter(|c| matches!(c, '*' | '?')).count();
        if wildcards == 0 {
            return Ok(AddressPattern::Exact(s));
        }
        if wildcards > MAX_WILDCARDS {
            return Err(format!(
                "{} has {wildcards} wildcards; at most {MAX_WILDCARDS} are accepted",
                quote(v)
            ));
        }
        if let Some(domain) = s.strip_prefix("*@")
            && !domain.contains(['*', '?'])
        {
            return Ok(AddressPattern::Domain(crate::mail::normalise_domain(
                domain,
            )?));
        }
        let mut re = String::with_capacity(s.len() * 2);
        for c in s.chars() {
            match c {
                '*' => re.push_str(".*"),
                '?' => re.push('.'),
                // Every meta character of the regex syntax is escaped (the
                // list is regex-syntax's `is_meta_character`): nothing a
                // caller writes is syntax but the two wildcards.
                c if "\\.+*?()|[]{}^$#&-~".contains(c) => {
                    re.push('\\');
                    re.push(c);
                }
                c => re.push(c),
            }
        }
        Ok(AddressPattern::Regex(re))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_and_classes() {
        for (v, want) in [
            ("550", Some((550, 550))),
            (" 4XX ", Some((400, 499))),
            ("5xx", Some((500, 599))),
            ("250", Some((250, 250))),
            ("6xx", None),
            ("1xx", None),
            ("55", None),
            ("5x0", None),
            ("x", None),
            ("", None),
            ("5500", None),
        ] {
            assert_eq!(reply_codes(v).ok(), want, "{v:?}");
        }
        assert!(reply_codes("6xx").expect_err("not a class").contains("4xx"));
    }

    #[test]
    fn addresses_and_networks() {
        let v4 = |s: &str| as_v6(s.parse::<IpAddr>().expect("ip"));
        for (v, want) in [
            ("10.1.2.3", Some((v4("10.1.2.3"), v4("10.1.2.3")))),
            ("10.1.0.0/16", Some((v4("10.1.0.0"), v4("10.1.255.255")))),
            ("10.1.2.3/16", Some((v4("10.1.0.0"), v4("10.1.255.255")))),
            ("0.0.0.0/0", Some((v4("0.0.0.0"), v4("255.255.255.255")))),
            (
                "2001:db8::/32",
                Some((
                    "2001:db8::".parse().expect("v6"),
                    "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"
                        .parse()
                        .expect("v6"),
                )),
            ),
            ("::1", Some((Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST))),
            ("10.1.0.0/33", None),
            ("10.1/16", None),
            ("host.example", None),
        ] {
            assert_eq!(ip_range(v).ok(), want, "{v:?}");
        }
    }

    #[test]
    fn address_patterns() {
        use AddressPattern::*;
        for (v, want) in [
            ("Bob@X.com", Some(Exact("bob@x.com".into()))),
            ("*@gmail.com", Some(Domain("gmail.com".into()))),
            ("bob*@x.com", Some(Regex("bob.*@x\\.com".into()))),
            (
                "*@*.example.com",
                Some(Regex(".*@.*\\.example\\.com".into())),
            ),
            ("a+b?@x(y).com", Some(Regex("a\\+b.@x\\(y\\)\\.com".into()))),
            ("*********@x", None),
        ] {
            assert_eq!(AddressPattern::parse(v).ok(), want, "{v:?}");
        }
    }
}
