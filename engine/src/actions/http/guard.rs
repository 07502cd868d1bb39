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

/// Why an address may not be reached, if it may not.
pub fn check(ip: IpAddr, policy: Policy) -> Result<(), String> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let why = match ip {
        IpAddr::V4(a) => v4_class(a, policy),
        IpAddr::V6(a) => v6_class(a, policy),
    };
    match why {
        Some(w) => Err(format!("{REFUSED}: {ip} is {w}")),
        None => Ok(()),
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
        assert!(
            check("169.254.169.254".parse().expect("ip"), d)
                .expect_err("refused")
                .starts_with(REFUSED)
        );
    }
}
