//! Is a mapped address public? Seed 004: a client that only learns private candidates (because
//! the STUN server was not reached, or it sits behind carrier-grade NAT) cannot carry media from
//! outside, so the verdict needs to know which kind of address the server reported.

use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether an address is routable on the public Internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AddressClass {
    Public,
    /// Not reachable from the public Internet, for the reason given.
    Private(PrivateKind),
}

/// Why an address is not public. Each kind is a different story for the person on the phone:
/// RFC 1918 means the STUN server sits inside the same network, CGNAT means the carrier NATs
/// again (and a phone cannot be reached from outside at all), the rest are misconfigurations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PrivateKind {
    /// 10/8, 172.16/12, 192.168/16 (RFC 1918).
    Rfc1918,
    /// 100.64/10, carrier-grade NAT (RFC 6598).
    Cgnat,
    /// 127/8, ::1.
    Loopback,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// fc00::/7 (RFC 4193) and the deprecated site-local fec0::/10 (RFC 3879).
    UniqueLocal,
    /// 0.0.0.0, ::.
    Unspecified,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24 (RFC 5737), 2001:db8::/32 (RFC 3849),
    /// 3fff::/20 (RFC 9637).
    Documentation,
    /// 198.18/15, benchmarking (RFC 2544).
    Benchmarking,
    /// 224/4, ff00::/8.
    Multicast,
    /// Other special-purpose space no host is mapped to: 0/8, 192.0.0/24, 240/4 (with the
    /// broadcast address), 100::/64 (discard-only).
    Reserved,
}

/// Classifies an address; IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) count as their IPv4
/// address.
pub fn classify(ip: IpAddr) -> AddressClass {
    let kind = match ip {
        IpAddr::V4(v4) => private_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => private_v4(v4),
            None => private_v6(v6),
        },
    };
    kind.map_or(AddressClass::Public, AddressClass::Private)
}

fn private_v4(ip: Ipv4Addr) -> Option<PrivateKind> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() => PrivateKind::Unspecified,
        (10, _, _) => PrivateKind::Rfc1918,
        (172, 16..=31, _) => PrivateKind::Rfc1918,
        (192, 168, _) => PrivateKind::Rfc1918,
        (100, 64..=127, _) => PrivateKind::Cgnat,
        (127, _, _) => PrivateKind::Loopback,
        (169, 254, _) => PrivateKind::LinkLocal,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => PrivateKind::Documentation,
        (198, 18..=19, _) => PrivateKind::Benchmarking,
        (224..=239, _, _) => PrivateKind::Multicast,
        (0, _, _) | (192, 0, 0) | (240..=255, _, _) => PrivateKind::Reserved,
        _ => return None,
    })
}

fn private_v6(ip: Ipv6Addr) -> Option<PrivateKind> {
    let s = ip.segments();
    Some(match s {
        _ if ip.is_unspecified() => PrivateKind::Unspecified,
        _ if ip.is_loopback() => PrivateKind::Loopback,
        [first, ..] if first & 0xffc0 == 0xfe80 => PrivateKind::LinkLocal,
        [first, ..] if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 => {
            PrivateKind::UniqueLocal
        }
        [0x2001, 0x0db8, ..] => PrivateKind::Documentation,
        [0x3fff, second, ..] if second & 0xf000 == 0 => PrivateKind::Documentation,
        [first, ..] if first & 0xff00 == 0xff00 => PrivateKind::Multicast,
        [0x0100, 0, 0, 0, ..] => PrivateKind::Reserved,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass::*;
    use PrivateKind::*;

    fn class(ip: &str) -> AddressClass {
        classify(ip.parse().unwrap())
    }

    #[test]
    fn ipv4_table() {
        let table = [
            ("8.8.8.8", Public),
            ("217.10.68.152", Public),
            ("9.255.255.255", Public),
            ("11.0.0.0", Public),
            ("10.0.0.1", Private(Rfc1918)),
            ("10.255.255.255", Private(Rfc1918)),
            ("172.15.255.255", Public),
            ("172.16.0.0", Private(Rfc1918)),
            ("172.31.255.255", Private(Rfc1918)),
            ("172.32.0.0", Public),
            ("192.168.178.1", Private(Rfc1918)),
            ("192.169.0.1", Public),
            ("100.63.255.255", Public),
            ("100.64.0.0", Private(Cgnat)),
            ("100.127.255.255", Private(Cgnat)),
            ("100.128.0.0", Public),
            ("127.0.0.1", Private(Loopback)),
            ("127.0.0.2", Private(Loopback)),
            ("169.254.1.1", Private(LinkLocal)),
            ("169.253.1.1", Public),
            ("0.0.0.0", Private(Unspecified)),
            ("0.1.2.3", Private(Reserved)),
            ("192.0.0.8", Private(Reserved)),
            ("192.0.2.1", Private(Documentation)),
            ("198.51.100.7", Private(Documentation)),
            ("203.0.113.255", Private(Documentation)),
            ("203.0.114.1", Public),
            ("198.18.0.1", Private(Benchmarking)),
            ("198.19.255.255", Private(Benchmarking)),
            ("198.20.0.0", Public),
            ("224.0.0.1", Private(Multicast)),
            ("239.255.255.250", Private(Multicast)),
            ("240.0.0.1", Private(Reserved)),
            ("255.255.255.255", Private(Reserved)),
            ("223.255.255.255", Public),
        ];
        for (ip, want) in table {
            assert_eq!(class(ip), want, "{ip}");
        }
    }

    #[test]
    fn ipv6_table() {
        let table = [
            ("2a00:1450:4001:82b::200e", Public),
            ("2001:4860:4860::8888", Public),
            ("::1", Private(Loopback)),
            ("::", Private(Unspecified)),
            ("fe80::1", Private(LinkLocal)),
            ("febf:ffff::1", Private(LinkLocal)),
            ("fc00::1", Private(UniqueLocal)),
            ("fd12:3456:789a::1", Private(UniqueLocal)),
            ("fec0::1", Private(UniqueLocal)),
            ("fbff::1", Public),
            ("2001:db8::1", Private(Documentation)),
            ("2001:db9::1", Public),
            ("3fff::1", Private(Documentation)),
            ("3fff:0fff::1", Private(Documentation)),
            ("3fff:1000::1", Public),
            ("3ffe::1", Public),
            ("ff02::1", Private(Multicast)),
            ("100::1", Private(Reserved)),
            ("100:0:0:1::1", Public),
            ("::ffff:192.168.1.1", Private(Rfc1918)),
            ("::ffff:100.64.0.1", Private(Cgnat)),
            ("::ffff:8.8.8.8", Public),
        ];
        for (ip, want) in table {
            assert_eq!(class(ip), want, "{ip}");
        }
    }
}
