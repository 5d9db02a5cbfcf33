//! Egress rules: which destinations (scheme, host or `*.domain`, port) a tenant or a
//! service may reach, their text form, and whether one list is inside another.
//!
//! Text form: `[scheme://]host[:port]`. The scheme is `https` (the default) or `http`;
//! the host is a DNS name, `*.` and a domain (any name below it, not the domain itself),
//! or an IP literal (`127.0.0.1`, `[::1]`); the port defaults to the scheme's (443 or
//! 80), and `:*` means any port. Paths, queries, user names and other schemes are
//! refused, so a rule always means what it says.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The most rules a tenant or a service may have.
pub const MAX_RULES: usize = 256;

/// Why a rule's text is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("egress rule {rule:?}: {reason}")]
pub struct RuleError {
    pub rule: String,
    pub reason: String,
}

fn bad(rule: &str, reason: impl Into<String>) -> RuleError {
    RuleError {
        rule: rule.chars().take(100).collect(),
        reason: reason.into(),
    }
}

/// A URL scheme egress can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "http" => Some(Scheme::Http),
            "https" => Some(Scheme::Https),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Which hosts a rule names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// One DNS name (lower case, no trailing dot).
    Name(String),
    /// Any name below a domain (`*.example.com` holds `example.com`).
    Below(String),
    /// One IP address, the only way a private address can be reached.
    Ip(IpAddr),
}

impl HostPattern {
    /// Parses a host, `*.domain` or an IP literal (IPv6 in brackets).
    pub fn parse(text: &str) -> Result<Self, RuleError> {
        let host = text.trim();
        if let Some(domain) = host.strip_prefix("*.") {
            let d = normalize_host(domain).map_err(|r| bad(text, r))?;
            if !d.contains('.') {
                return Err(bad(
                    text,
                    "a wildcard needs a domain of two labels or more (not `*.com`)",
                ));
            }
            return Ok(HostPattern::Below(d));
        }
        if host.contains('*') {
            return Err(bad(text, "a wildcard is only `*.` before a domain"));
        }
        Ok(match Host::parse(host).map_err(|r| bad(text, r))? {
            Host::Name(n) => HostPattern::Name(n),
            Host::Ip(a) => HostPattern::Ip(a),
        })
    }

    /// Whether `host` (normalized by [`normalize_host`]) is one this pattern names.
    pub fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (HostPattern::Name(n), Host::Name(h)) => n == h,
            (HostPattern::Below(d), Host::Name(h)) => h
                .strip_suffix(d.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            (HostPattern::Ip(a), Host::Ip(b)) => a == b,
            _ => false,
        }
    }

    /// Whether every host this pattern names is one `wider` names too.
    fn within(&self, wider: &HostPattern) -> bool {
        match (self, wider) {
            (HostPattern::Below(d), HostPattern::Below(w)) => {
                d == w || Host::Name(d.clone()).below(w)
            }
            (HostPattern::Name(n), w) => w.matches(&Host::Name(n.clone())),
            (HostPattern::Ip(a), w) => w.matches(&Host::Ip(*a)),
            (HostPattern::Below(_), _) => false,
        }
    }
}

/// A destination's host: a name or an address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

impl Host {
    /// Parses a URL's host: a DNS name (lower-cased, a trailing dot dropped) or an IP
    /// literal (IPv6 in brackets).
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or("an IPv6 address needs its closing bracket")?;
            return inner
                .parse::<std::net::Ipv6Addr>()
                .map(|a| Host::Ip(IpAddr::V6(a)))
                .map_err(|_| format!("{inner:?} is not an IPv6 address"));
        }
        if let Ok(a) = s.parse::<std::net::Ipv4Addr>() {
            return Ok(Host::Ip(IpAddr::V4(a)));
        }
        normalize_host(s).map(Host::Name)
    }

    /// Whether this name is strictly below `domain`.
    fn below(&self, domain: &str) -> bool {
        HostPattern::Below(domain.to_string()).matches(self)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(a) => write!(f, "{a}"),
        }
    }
}

/// A DNS name as rules compare it: ASCII (punycode for other scripts), lower case, no
/// trailing dot, labels of letters, digits and hyphens (and `_`, which some services
/// use), 1 to 63 characters each, 253 in all.
pub fn normalize_host(s: &str) -> Result<String, String> {
    let h = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    if h.is_empty() || h.len() > 253 {
        return Err("a host name has 1 to 253 characters".into());
    }
    for label in h.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(format!("{s:?} is not a host name"));
        }
    }
    if h.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("{s:?} is not a host name or an IPv4 address"));
    }
    Ok(h)
}

/// One allowed destination pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rule {
    pub scheme: Scheme,
    pub host: HostPattern,
    /// `None`: any port.
    pub port: Option<u16>,
}

impl Rule {
    /// Parses the text form (see the module's documentation).
    pub fn parse(text: &str) -> Result<Self, RuleError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(bad(text, "empty"));
        }
        let (scheme, rest) = match t.split_once("://") {
            Some((s, rest)) => (
                Scheme::parse(s)
                    .ok_or_else(|| bad(text, format!("scheme {s:?} is not http or https")))?,
                rest,
            ),
            None => (Scheme::Https, t),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) || rest.chars().any(char::is_whitespace) {
            return Err(bad(
                text,
                "a rule is a scheme, a host and a port: no path, query or user",
            ));
        }
        let (host, port) = split_port(rest).map_err(|r| bad(text, r))?;
        let port = match port {
            None => Some(scheme.default_port()),
            Some("*") => None,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(bad(text, format!("port {p:?} is not 1 to 65535"))),
                Ok(p) => Some(p),
            },
        };
        let host = HostPattern::parse(host).map_err(|e| bad(text, e.reason))?;
        Ok(Rule { scheme, host, port })
    }

    /// Whether a request to `scheme://host:port` is one this rule allows.
    pub fn allows(&self, scheme: Scheme, host: &Host, port: u16) -> bool {
        self.scheme == scheme && self.port.is_none_or(|p| p == port) && self.host.matches(host)
    }

    /// Whether this rule names exactly `ip` and `port`: what a private address needs.
    pub fn names_exactly(&self, ip: IpAddr, port: u16) -> bool {
        self.host == HostPattern::Ip(ip) && self.port == Some(port)
    }

    /// Whether everything this rule allows, `wider` allows too.
    pub fn within(&self, wider: &Rule) -> bool {
        self.scheme == wider.scheme
            && (wider.port.is_none() || self.port == wider.port)
            && self.host.within(&wider.host)
    }
}

/// Splits `host[:port]`, minding IPv6 brackets.
fn split_port(s: &str) -> Result<(&str, Option<&str>), String> {
    if s.starts_with('[') {
        let end = s
            .find(']')
            .ok_or("an IPv6 address needs its closing bracket")?;
        let (h, rest) = s.split_at(end + 1);
        return match rest {
            "" => Ok((h, None)),
            r => r
                .strip_prefix(':')
                .map(|p| (h, Some(p)))
                .ok_or_else(|| format!("{r:?} after the address")),
        };
    }
    if s.matches(':').count() > 1 {
        return Err("an IPv6 address goes in brackets: [::1]:8080".into());
    }
    Ok(match s.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    })
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Name(n) => f.write_str(n),
            HostPattern::Below(d) => write!(f, "*.{d}"),
            HostPattern::Ip(a) => write!(f, "{}", Host::Ip(*a)),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host)?;
        match self.port {
            Some(p) => write!(f, ":{p}"),
            None => f.write_str(":*"),
        }
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Rule::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Parses a list of rules, refusing more than [`MAX_RULES`]; duplicates collapse.
pub fn parse_rules<S: AsRef<str>>(texts: &[S]) -> Result<Vec<Rule>, RuleError> {
    if texts.len() > MAX_RULES {
        return Err(bad("", format!("at most {MAX_RULES} rules")));
    }
    let mut rules = texts
        .iter()
        .map(|t| Rule::parse(t.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    rules.sort();
    rules.dedup();
    Ok(rules)
}

/// The first of `narrow` that no rule of `wide` holds, if any: a service's list must be
/// inside its tenant's.
pub fn first_outside<'a>(narrow: &'a [Rule], wide: &[Rule]) -> Option<&'a Rule> {
    narrow.iter().find(|r| !wide.iter().any(|w| r.within(w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Rule {
        Rule::parse(s).unwrap()
    }

    fn name(s: &str) -> Host {
        Host::Name(s.into())
    }

    #[test]
    fn text_round_trips_with_defaults_spelled_out() {
        for (text, shown) in [
            ("api.example.com", "https://api.example.com:443"),
            ("http://API.Example.com.", "http://api.example.com:80"),
            ("*.example.com:8443", "https://*.example.com:8443"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("https://[::1]:*", "https://[::1]:*"),
            ("https://example.com/", "https://example.com:443"),
        ] {
            assert_eq!(r(text).to_string(), shown, "{text}");
            assert_eq!(r(shown), r(text));
        }
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        for (text, why) in [
            ("", "empty"),
            ("ftp://example.com", "not http or https"),
            ("example.com/path", "no path"),
            ("user@example.com", "no path"),
            ("example.com:0", "1 to 65535"),
            ("example.com:70000", "1 to 65535"),
            ("*.com", "two labels"),
            ("*", "only `*.`"),
            ("a*.example.com", "only `*.`"),
            ("::1", "brackets"),
            ("[::1", "closing bracket"),
            ("-bad-.example.com", "not a host name"),
            ("999.1.1.1", "not a host name or an IPv4"),
        ] {
            let e = Rule::parse(text).unwrap_err();
            assert!(e.to_string().contains(why), "{text}: {e}");
        }
        let many: Vec<String> = (0..=MAX_RULES).map(|i| format!("h{i}.example")).collect();
        assert!(parse_rules(&many).is_err());
    }

    #[test]
    fn matching_minds_scheme_port_and_the_wildcard_boundary() {
        let w = r("*.example.com");
        assert!(w.allows(Scheme::Https, &name("a.example.com"), 443));
        assert!(w.allows(Scheme::Https, &name("a.b.example.com"), 443));
        assert!(!w.allows(Scheme::Https, &name("example.com"), 443));
        assert!(!w.allows(Scheme::Https, &name("badexample.com"), 443));
        assert!(!w.allows(Scheme::Http, &name("a.example.com"), 80));
        assert!(!w.allows(Scheme::Https, &name("a.example.com"), 8443));
        assert!(r("example.com:*").allows(Scheme::Https, &name("example.com"), 9));
        let ip = r("http://127.0.0.1:8080");
        let lo = Host::Ip("127.0.0.1".parse().unwrap());
        assert!(ip.allows(Scheme::Http, &lo, 8080));
        assert!(ip.names_exactly("127.0.0.1".parse().unwrap(), 8080));
        assert!(!r("http://127.0.0.1:*").names_exactly("127.0.0.1".parse().unwrap(), 8080));
    }

    #[test]
    fn a_service_list_must_be_inside_its_tenants() {
        let tenant =
            parse_rules(&["*.example.com", "http://10.0.0.1:8080", "api.other.org:*"]).unwrap();
        for inside in [
            "api.example.com",
            "*.eu.example.com",
            "*.example.com",
            "http://10.0.0.1:8080",
            "api.other.org:8443",
        ] {
            assert_eq!(first_outside(&[r(inside)], &tenant), None, "{inside}");
        }
        for outside in [
            "example.com",
            "http://api.example.com",
            "*.com.example",
            "api.example.com:*",
            "http://10.0.0.1:*",
            "other.org",
        ] {
            let Ok(rule) = Rule::parse(outside) else {
                continue;
            };
            assert_eq!(
                first_outside(std::slice::from_ref(&rule), &tenant),
                Some(&rule),
                "{outside}"
            );
        }
    }
}
