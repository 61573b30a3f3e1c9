//! Who may deliver: an allow-list of source networks, and which proxies' `X-Forwarded-For`
//! to believe. NectarDesk signs nothing, so the source address (with the URL token) is
//! what there is to check.
//!
//! Every address is compared in its canonical form: on a dual-stack listener an IPv4
//! client arrives as `::ffff:a.b.c.d`, which no IPv4 network would contain.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Source-address rules.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Networks allowed to deliver; empty allows every address.
    pub allowed: Vec<IpNet>,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
}

/// A comma-separated list of CIDRs or plain addresses, as a setting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(pub Vec<IpNet>);

/// An entry of a network list that is neither a CIDR nor an address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("entry {0:?} is not a CIDR (like 10.0.0.0/8) or an address")]
pub struct BadNetwork(pub String);

impl std::str::FromStr for Networks {
    type Err = BadNetwork;

    fn from_str(text: &str) -> Result<Networks, BadNetwork> {
        parse_networks(text).map(Networks)
    }
}

/// Parses a comma-separated list of CIDRs or plain addresses; names the bad entry. An
/// IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) is read as the IPv4 network it maps.
pub fn parse_networks(text: &str) -> Result<Vec<IpNet>, BadNetwork> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map(canonical_network)
                .map_err(|_| BadNetwork(entry.to_owned()))
        })
        .collect()
}

fn canonical_network(net: IpNet) -> IpNet {
    match (net, net.addr().to_canonical()) {
        (IpNet::V6(v6), IpAddr::V4(v4)) if v6.prefix_len() >= 96 => {
            IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).map_or(net, |n| n.trunc())
        }
        _ => net,
    }
}

/// One hop of `X-Forwarded-For`, as proxies write them: an address, maybe with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:443`) or in brackets; canonical.
fn hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    let ip = text
        .parse::<IpAddr>()
        .or_else(|_| text.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .or_else(|| text.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(ip.to_canonical())
}

impl Access {
    /// The client's address: the peer, or, when the peer is a trusted proxy, the nearest
    /// untrusted address in `X-Forwarded-For`. `forwarded_for` holds every line of the
    /// header in the order received: a proxy may append its hop as a new line (HAProxy's
    /// `option forwardfor`) instead of at the end of the last one, and the lines together
    /// are one list, read right to left because each proxy appends the address it saw.
    /// `None` when a trusted proxy forwarded something unreadable.
    pub fn client(&self, peer: IpAddr, forwarded_for: &[&[u8]]) -> Option<IpAddr> {
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|net| net.contains(ip));
        let peer = peer.to_canonical();
        if forwarded_for.is_empty() || !trusted(&peer) {
            return Some(peer);
        }
        let mut client = peer;
        for line in forwarded_for.iter().rev() {
            let line = std::str::from_utf8(line).ok()?;
            for text in line.rsplit(',').filter(|h| !h.trim().is_empty()) {
                client = hop(text)?;
                if !trusted(&client) {
                    return Some(client);
                }
            }
        }
        Some(client)
    }

    /// Whether `client` may deliver.
    pub fn allows(&self, client: Option<IpAddr>) -> bool {
        self.allowed.is_empty()
            || client.is_some_and(|ip| self.allowed.iter().any(|net| net.contains(&ip)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn access(allowed: &str, trusted: &str) -> Access {
        Access {
            allowed: parse_networks(allowed).unwrap(),
            trusted_proxies: parse_networks(trusted).unwrap(),
        }
    }

    #[test]
    fn parses_cidrs_and_plain_addresses_and_names_a_bad_entry() {
        assert_eq!(
            parse_networks("10.0.0.0/8, 192.0.2.7 ,::1").unwrap().len(),
            3
        );
        assert_eq!(parse_networks("").unwrap(), vec![]);
        assert_eq!(
            parse_networks("10.0.0.0/8,10.0.0.0/33"),
            Err(BadNetwork("10.0.0.0/33".into()))
        );
        assert_eq!(
            parse_networks("nectardesk.com"),
            Err(BadNetwork("nectardesk.com".into()))
        );
    }

    #[test]
    fn forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy() {
        let a = access("", "10.0.0.0/8");
        assert_eq!(
            a.client(ip("203.0.113.9"), &[b"198.51.100.1"]),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            a.client(ip("10.0.0.2"), &[b"198.51.100.1"]),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(a.client(ip("10.0.0.2"), &[]), Some(ip("10.0.0.2")));
    }

    #[test]
    fn a_spoofed_left_entry_does_not_win() {
        // The client put a fake address first; our proxy appended the real one.
        let a = access("", "10.0.0.0/8");
        assert_eq!(
            a.client(ip("10.0.0.2"), &[b"192.0.2.1, 198.51.100.1"]),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(
            a.client(ip("10.0.0.2"), &[b"198.51.100.1, 10.0.0.3"]),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(a.client(ip("10.0.0.2"), &[b"garbage"]), None);
        assert_eq!(a.client(ip("10.0.0.2"), &[b"198.51.100.1\xff"]), None);
    }

    #[test]
    fn every_forwarded_for_line_is_read_right_to_left() {
        // The client sent its own line; our proxy added another (HAProxy's forwardfor).
        let a = access("", "10.0.0.0/8");
        assert_eq!(
            a.client(ip("10.0.0.2"), &[b"192.0.2.1", b"198.51.100.1"]),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(
            a.client(
                ip("10.0.0.2"),
                &[b"192.0.2.1", b"198.51.100.1, 10.0.0.3", b"10.0.0.4"]
            ),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(
            a.client(ip("10.0.0.2"), &[b"192.0.2.1", b"10.0.0.3,"]),
            Some(ip("192.0.2.1"))
        );
    }

    #[test]
    fn ipv4_mapped_addresses_are_read_as_ipv4_everywhere() {
        let a = access("198.51.100.0/24", "10.0.0.0/8");
        let client = a.client(ip("::ffff:198.51.100.7"), &[]);
        assert_eq!(client, Some(ip("198.51.100.7")));
        assert!(a.allows(client));
        assert_eq!(
            a.client(
                ip("::ffff:10.0.0.2"),
                &[b"::ffff:198.51.100.9, ::ffff:10.0.0.3"]
            ),
            Some(ip("198.51.100.9"))
        );
        let mapped = access("::ffff:198.51.100.0/120", "");
        assert!(mapped.allows(Some(ip("198.51.100.200"))));
    }

    #[test]
    fn hops_may_carry_ports_and_brackets() {
        assert_eq!(hop(" 192.0.2.1:4711 "), Some(ip("192.0.2.1")));
        assert_eq!(hop("[2001:db8::1]:443"), Some(ip("2001:db8::1")));
        assert_eq!(hop("[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(hop("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(hop("unknown"), None);
        assert_eq!(hop("_hidden"), None);
    }

    #[test]
    fn the_allow_list_admits_only_its_networks() {
        let a = access("198.51.100.0/24", "");
        assert!(a.allows(Some(ip("198.51.100.77"))));
        assert!(!a.allows(Some(ip("203.0.113.9"))));
        assert!(!a.allows(None));
        assert!(access("", "").allows(None));
    }
}
