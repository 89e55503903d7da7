//! The client's address behind a trusted load balancer, read from the one header it sets.
//!
//! A client can write any header it likes, and a load balancer adds to (or overwrites) only
//! the one it is configured for. So only `rate_limit.client_ip_header` is read, and only when
//! the TCP peer is a trusted proxy; its addresses are read right to left, from the hop next to
//! us, skipping our own proxies: the first other address was written by a proxy we trust, and
//! is the client. Anything left of it is the client's own claim. Reading stops at a value that
//! is not an address (`unknown`, an obfuscated `Forwarded` node, garbage): what lies left of
//! it cannot be trusted either, and the last of our proxies passed is taken instead.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

use crate::config::ClientIpHeader;

/// The client's address: the peer, or, when the peer is a trusted proxy, the address that
/// proxy vouches for in `header`.
pub fn client_ip(
    peer: SocketAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
    header: ClientIpHeader,
) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !trusted_peer(peer, trusted) {
        // Anyone else may write anything in those headers: they are ignored.
        return peer_ip;
    }
    let mut hops: Vec<Option<IpAddr>> = Vec::new();
    for value in headers.get_all(header.name()) {
        let Ok(value) = value.to_str() else {
            // Not text: nothing at or left of it is believed.
            hops.push(None);
            continue;
        };
        hops.extend(value.split(',').map(|elem| match header {
            ClientIpHeader::Forwarded => forwarded_for(elem),
            ClientIpHeader::XForwardedFor | ClientIpHeader::XRealIp => node(elem),
        }));
    }
    if header == ClientIpHeader::XRealIp {
        // One address, set by the proxy: only its last value is the proxy's.
        hops = hops.pop().into_iter().collect();
    }
    let mut ours = None;
    for hop in hops.iter().rev() {
        match hop.map(|ip| ip.to_canonical()) {
            Some(ip) if is_trusted(&ip) => ours = Some(ip),
            Some(ip) => return ip,
            None => break,
        }
    }
    // Every hop is one of our proxies (a client inside them), or the header is absent.
    ours.unwrap_or(peer_ip)
}

/// Whether the TCP peer is one of our proxies (`rate_limit.trusted_proxies`): the one decision
/// behind every header wardgate believes only from them, the client's address here and the
/// incoming `X-Request-Id` (`request_id`).
pub fn trusted_peer(peer: SocketAddr, trusted: &[IpNet]) -> bool {
    let ip = peer.ip().to_canonical();
    trusted.iter().any(|n| n.contains(&ip))
}

/// The `for=` node of one `Forwarded` element (RFC 7239), if it is an address.
fn forwarded_for(elem: &str) -> Option<IpAddr> {
    elem.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then(|| node(v))?
    })
}

/// An address as proxies write it: bare, quoted, `[v6]`, with or without a port.
fn node(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use ClientIpHeader::{Forwarded, XForwardedFor, XRealIp};

    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const LB: &str = "10.0.0.2:5555";

    fn from(peer: &str, h: &HeaderMap, header: ClientIpHeader) -> IpAddr {
        client_ip(peer.parse().unwrap(), h, &nets(&["10.0.0.0/8"]), header)
    }

    #[test]
    fn only_a_trusted_peer_is_believed() {
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 10.0.0.7")]);
        assert_eq!(from(LB, &h, XForwardedFor), ip("203.0.113.9"));
        assert_eq!(
            from("198.51.100.1:5555", &h, XForwardedFor),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn only_the_configured_header_is_read() {
        // Behind an X-Forwarded-For load balancer, the client's own Forwarded is nothing.
        let h = headers(&[
            ("forwarded", "for=192.0.2.66"),
            ("x-real-ip", "192.0.2.67"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(from(LB, &h, XForwardedFor), ip("203.0.113.9"));
        // And the other way round.
        let h = headers(&[
            ("x-forwarded-for", "192.0.2.66"),
            (
                "forwarded",
                "for=\"[2001:db8::1]:443\";proto=https, for=10.0.0.9",
            ),
        ]);
        assert_eq!(from(LB, &h, Forwarded), ip("2001:db8::1"));
        let h = headers(&[("x-forwarded-for", "192.0.2.66")]);
        assert_eq!(from(LB, &h, Forwarded), ip("10.0.0.2"), "absent: the peer");
        let h = headers(&[("x-real-ip", "192.0.2.66"), ("x-real-ip", "203.0.113.9")]);
        assert_eq!(from(LB, &h, XRealIp), ip("203.0.113.9"));
    }

    #[test]
    fn the_right_most_address_that_is_not_ours_is_the_client() {
        // The client wrote the first two; the load balancer appended what it saw.
        let h = headers(&[
            ("x-forwarded-for", "192.0.2.1, 10.0.0.5"),
            ("x-forwarded-for", "203.0.113.9, 10.0.0.7"),
        ]);
        assert_eq!(from(LB, &h, XForwardedFor), ip("203.0.113.9"));
        // A value that is not an address stops the walk: the last proxy of ours is taken.
        let h = headers(&[("x-forwarded-for", "192.0.2.1, unknown, 10.0.0.7")]);
        assert_eq!(from(LB, &h, XForwardedFor), ip("10.0.0.7"));
        let h = headers(&[("forwarded", "for=192.0.2.1, for=_hidden, for=10.0.0.7")]);
        assert_eq!(from(LB, &h, Forwarded), ip("10.0.0.7"));
        let h = headers(&[("x-forwarded-for", "203.0.113.9:4711, [2001:db8::2]:80")]);
        assert_eq!(from(LB, &h, XForwardedFor), ip("2001:db8::2"));
        let h = headers(&[("x-forwarded-for", "::ffff:203.0.113.9")]);
        assert_eq!(from(LB, &h, XForwardedFor), ip("203.0.113.9"));
    }
}
