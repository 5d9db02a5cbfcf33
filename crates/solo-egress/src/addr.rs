//! Which resolved addresses are public. A private one (loopback, private, link-local,
//! carrier-grade NAT, multicast, unspecified, broadcast, reserved, documentation,
//! unique-local, and IPv6 forms that carry an IPv4 address: mapped, compatible, NAT64,
//! 6to4) is reached only through a rule that names that exact address and port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether no rule may reach `ip`: the unspecified addresses and `0.0.0.0/8` (which
/// reach this machine), broadcast and multicast.
pub fn never(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.octets()[0] == 0 || a.is_broadcast() || a.is_multicast(),
        IpAddr::V6(a) => {
            a.is_unspecified()
                || a.is_multicast()
                || a.to_ipv4_mapped().is_some_and(|v4| never(IpAddr::V4(v4)))
        }
    }
}

/// Why an address is not public, or `None` if it is.
pub fn private_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => v4_kind(a),
        IpAddr::V6(a) => v6_kind(a),
    }
}

fn v4_kind(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    Some(match o {
        _ if a.is_unspecified() => "unspecified",
        [0, ..] => "this network (0.0.0.0/8)",
        _ if a.is_loopback() => "loopback",
        _ if a.is_private() => "private",
        _ if a.is_link_local() => "link-local",
        [100, b, ..] if (64..128).contains(&b) => "carrier-grade NAT",
        [192, 0, 0, _] => "IETF protocol assignments",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation",
        [198, b, ..] if b == 18 || b == 19 => "benchmarking",
        _ if a.is_multicast() => "multicast",
        _ if a.is_broadcast() => "broadcast",
        [b, ..] if b >= 240 => "reserved",
        _ => return None,
    })
}

fn v6_kind(a: Ipv6Addr) -> Option<&'static str> {
    let s = a.segments();
    if let Some(v4) = a.to_ipv4_mapped() {
        return Some(v4_kind(v4).unwrap_or("IPv4-mapped"));
    }
    Some(match s {
        _ if a.is_unspecified() => "unspecified",
        _ if a.is_loopback() => "loopback",
        // ::a.b.c.d, deprecated IPv4-compatible addresses.
        [0, 0, 0, 0, 0, 0, _, _] => "IPv4-compatible",
        [0x64, 0xff9b, ..] => "NAT64",
        [0x2002, ..] => "6to4",
        [0x2001, 0xdb8, ..] => "documentation",
        [0x2001, b, ..] if b < 0x200 => "IETF protocol assignments",
        [b, ..] if b & 0xfe00 == 0xfc00 => "unique-local",
        [b, ..] if b & 0xffc0 == 0xfe80 => "link-local",
        [b, ..] if b & 0xffc0 == 0xfec0 => "site-local",
        _ if a.is_multicast() => "multicast",
        // Only 2000::/3 is allocated as global unicast.
        [b, ..] if b & 0xe000 != 0x2000 => "reserved",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_private_range_is_named_and_public_addresses_pass() {
        for a in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.18.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "4000::1",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert!(private_kind(ip).is_some(), "{a} passed");
        }
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "93.184.216.34",
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert_eq!(private_kind(ip), None, "{a}");
        }
        let mapped: IpAddr = "::ffff:8.8.8.8".parse().unwrap();
        assert_eq!(private_kind(mapped), Some("IPv4-mapped"));
        for a in [
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "::",
            "ff02::1",
            "::ffff:0.0.0.0",
        ] {
            assert!(never(a.parse().unwrap()), "{a}");
        }
        for a in ["127.0.0.1", "10.0.0.1", "::1", "8.8.8.8"] {
            assert!(!never(a.parse().unwrap()), "{a}");
        }
    }
}
