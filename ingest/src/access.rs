//! Who may deliver: an allow-list of source networks, and which proxies' `X-Forwarded-For`
//! to believe. NectarDesk signs nothing, so the source address (with the URL token) is
//! what there is to check.

use std::net::IpAddr;

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

/// Parses a comma-separated list of CIDRs or plain addresses; names the bad entry.
pub fn parse_networks(text: &str) -> Result<Vec<IpNet>, BadNetwork> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| BadNetwork(entry.to_owned()))
        })
        .collect()
}

impl Access {
    /// The client's address: the peer, or, when the peer is a trusted proxy, the nearest
    /// untrusted address in `X-Forwarded-For` (read right to left, as each proxy appends
    /// the address it saw). `None` when a trusted proxy forwarded something unparsable.
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>) -> Option<IpAddr> {
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|net| net.contains(ip));
        let Some(header) = forwarded_for.filter(|_| trusted(&peer)) else {
            return Some(peer);
        };
        let mut client = peer;
        for hop in header.rsplit(',').map(str::trim) {
            client = hop.parse().ok()?;
            if !trusted(&client) {
                break;
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
            a.client(ip("203.0.113.9"), Some("198.51.100.1")),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            a.client(ip("10.0.0.2"), Some("198.51.100.1")),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(a.client(ip("10.0.0.2"), None), Some(ip("10.0.0.2")));
    }

    #[test]
    fn a_spoofed_left_entry_does_not_win() {
        // The client put a fake address first; our proxy appended the real one.
        let a = access("", "10.0.0.0/8");
        assert_eq!(
            a.client(ip("10.0.0.2"), Some("192.0.2.1, 198.51.100.1")),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(
            a.client(ip("10.0.0.2"), Some("198.51.100.1, 10.0.0.3")),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(a.client(ip("10.0.0.2"), Some("garbage")), None);
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
