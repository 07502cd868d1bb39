//! The egress guard: which addresses an HTTP call may connect to. Every address a host name resolves to
//! is checked before connecting (a name with one bad address is refused whole, so DNS answers cannot
//! be mixed to slip one through), and the checked addresses are the ones connected to.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// What a call may reach beyond the public internet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Policy {
    /// Link-local addresses and cloud metadata endpoints (169.254.0.0/16, fe80::/10, fd00:ec2::254).
    pub allow_link_local: bool,
    /// Loopback (127.0.0.0/8, ::1): allowed unless denied.
    pub deny_loopback: bool,
    /// Private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7): allowed unless denied.
    pub deny_private: bool,
}

/// The marker of a refusal in an error message, so the caller can tell it from a network failure.
pub const REFUSED: &str = "egress refused";

/// Why an address may not be reached, if it may not. An IPv6 address that carries an IPv4 one a
/// gateway or tunnel would deliver to (IPv4-mapped or -compatible, NAT64 `64:ff9b::/96`, 6to4
/// `2002::/16`, Teredo `2001::/32`) is judged as that IPv4 address too.
pub fn check(ip: IpAddr, policy: Policy) -> Result<(), String> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let why = match ip {
        IpAddr::V4(a) => v4_class(a, policy).map(|w| format!("{ip} is {w}")),
        IpAddr::V6(a) => v6_class(a, policy)
            .map(|w| format!("{ip} is {w}"))
            .or_else(|| {
                let v4 = embedded_v4(a)?;
                v4_class(v4, policy).map(|w| format!("{ip} carries {v4}, which is {w}"))
            }),
    };
    why.map_or(Ok(()), |w| Err(format!("{REFUSED}: {w}")))
}

/// The IPv4 address an IPv6 one carries for a translator or tunnel to deliver to.
fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = a.segments();
    let last = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // NAT64, the well-known prefix
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(last),
        // IPv4-compatible (deprecated; `::` and `::1` are themselves)
        [0, 0, 0, 0, 0, 0, _, _] if !a.is_unspecified() && !a.is_loopback() => Some(last),
        // 6to4: the relay's IPv4 address follows the prefix
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        // Teredo: the client's address, inverted, in the last 32 bits
        [0x2001, 0, ..] => Some(Ipv4Addr::from(!u32::from(last))),
        _ => None,
    }
}

fn v4_class(a: Ipv4Addr, p: Policy) -> Option<&'static str> {
    let o = a.octets();
    if a.is_unspecified() || o[0] == 0 {
        Some("an unspecified address")
    } else if a.is_broadcast() || a.is_multicast() {
        Some("a broadcast or multicast address")
    } else if a.is_link_local() && !p.allow_link_local {
        Some(
            "link-local (cloud metadata lives at 169.254.169.254); a target may set `allow_link_local`",
        )
    } else if a.is_loopback() && p.deny_loopback {
        Some("loopback, which this target denies")
    } else if (a.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64)) && p.deny_private {
        Some("in a private range, which this target denies")
    } else {
        None
    }
}

fn v6_class(a: Ipv6Addr, p: Policy) -> Option<&'static str> {
    let s = a.segments();
    let metadata = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    if a.is_unspecified() {
        Some("an unspecified address")
    } else if a.is_multicast() {
        Some("a multicast address")
    } else if (a == metadata || (s[0] & 0xffc0) == 0xfe80) && !p.allow_link_local {
        Some("link-local or a cloud metadata address; a target may set `allow_link_local`")
    } else if a.is_loopback() && p.deny_loopback {
        Some("loopback, which this target denies")
    } else if (s[0] & 0xfe00) == 0xfc00 && p.deny_private {
        Some("in a private range (fc00::/7), which this target denies")
    } else {
        None
    }
}

/// Resolves `host:port` and checks every address; all of them pass, or none is returned.
pub fn resolve(netloc: &str, policy: Policy) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
    for a in &addrs {
        if let Err(why) = check(a.ip(), policy) {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
        }
    }
    Ok(addrs)
}

/// The guard as ureq's resolver.
#[derive(Debug, Clone, Copy)]
pub struct Guarded(pub Policy);

impl ureq::Resolver for Guarded {
    fn resolve(&self, netloc: &str) -> io::Result<Vec<SocketAddr>> {
        resolve(netloc, self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ip: &str, p: Policy) -> bool {
        check(ip.parse().expect("ip"), p).is_ok()
    }

    #[test]
    fn metadata_link_local_and_unspecified_are_refused_by_default() {
        let d = Policy::default();
        for bad in [
            "169.254.169.254",
            "169.254.0.1",
            "0.0.0.0",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!ok(bad, d), "{bad} passed");
        }
        for good in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "93.184.216.34",
            "::1",
            "2606:4700::1",
        ] {
            assert!(ok(good, d), "{good} refused");
        }
        let open = Policy {
            allow_link_local: true,
            ..Policy::default()
        };
        assert!(ok("169.254.169.254", open));
        assert!(!ok("0.0.0.0", open), "unspecified is never allowed");
        let closed = Policy {
            deny_loopback: true,
            deny_private: true,
            ..Policy::default()
        };
        for bad in [
            "127.0.0.1",
            "::1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.0.1",
            "100.64.0.1",
            "fd12::1",
        ] {
            assert!(!ok(bad, closed), "{bad} passed");
        }
        assert!(ok("8.8.8.8", closed));
        // an IPv4 address inside an IPv6 one is judged as itself
        for bad in [
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::169.254.169.254",
            "::169.254.169.254",
            "2002:a9fe:a9fe::1",
            "2001:0:4136:e378:8000:63bf:5601:5601",
        ] {
            assert!(!ok(bad, d), "{bad} passed");
            let why = check(bad.parse().expect("ip"), d).expect_err("refused");
            assert!(why.contains("169.254.169.254"), "{why}");
        }
        for bad in [
            "64:ff9b::10.0.0.1",
            "2002:c0a8:101::1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
        ] {
            assert!(!ok(bad, closed), "{bad} passed");
            assert!(ok(bad, d), "{bad} refused by default");
        }
        for good in ["64:ff9b::808:808", "2002:808:808::1"] {
            assert!(ok(good, closed), "{good} refused");
        }
        assert!(
            check("169.254.169.254".parse().expect("ip"), d)
                .expect_err("refused")
                .starts_with(REFUSED)
        );
    }
}
