//! IP networks and addresses, for `network(...)` tests.

use super::*;

/// An IPv4 or IPv6 network, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Network {
    V4 { addr: u32, prefix: u32 },
    V6 { addr: u128, prefix: u32 },
}

impl Network {
    /// `10.0.0.0/8`, `2001:db8::/32`; a bare address is a single host. Host
    /// bits after the prefix are allowed and ignored.
    pub(super) fn parse(text: &str) -> Option<Network> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.trim(), Some(p.trim())),
            None => (text.trim(), None),
        };
        let prefix_len = |max: u32| match prefix {
            None => Some(max),
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u32>().ok().filter(|&p| p <= max)
            }
            Some(_) => None,
        };
        match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(a) => {
                let prefix = prefix_len(32)?;
                Some(Network::V4 {
                    addr: u32::from(a) & mask_v4(prefix),
                    prefix,
                })
            }
            IpAddr::V6(a) => {
                let prefix = prefix_len(128)?;
                Some(Network::V6 {
                    addr: u128::from(a) & mask_v6(prefix),
                    prefix,
                })
            }
        }
    }

    /// Whether the text holds an address inside this network.
    pub(super) fn contains(&self, text: &str) -> bool {
        let Some(ip) = parse_address(text) else {
            return false;
        };
        match (*self, ip) {
            (Network::V4 { addr, prefix }, IpAddr::V4(a)) => u32::from(a) & mask_v4(prefix) == addr,
            (Network::V4 { addr, prefix }, IpAddr::V6(a)) => a
                .to_ipv4_mapped()
                .is_some_and(|a| u32::from(a) & mask_v4(prefix) == addr),
            (Network::V6 { addr, prefix }, IpAddr::V6(a)) => {
                u128::from(a) & mask_v6(prefix) == addr
            }
            (Network::V6 { .. }, IpAddr::V4(_)) => false,
        }
    }
}

fn mask_v4(prefix: u32) -> u32 {
    u32::MAX.checked_shl(32 - prefix).unwrap_or(0)
}

fn mask_v6(prefix: u32) -> u128 {
    u128::MAX.checked_shl(128 - prefix).unwrap_or(0)
}

/// An address as hardware reports it: `10.0.0.5`, `10.0.0.5/24`,
/// `fe80::1%eth0`, `[2001:db8::1]`.
fn parse_address(text: &str) -> Option<IpAddr> {
    let t = text.trim();
    let t = t.split('/').next().unwrap_or(t);
    let t = t.split('%').next().unwrap_or(t);
    let t = t
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(t);
    t.parse().ok()
}
