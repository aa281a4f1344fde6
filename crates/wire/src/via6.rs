//! 4via6 addresses: an IPv4 address at a site, written as an IPv6 address
//! inside the tailnet's unique local /48.
//!
//! Two sites may use the same IPv4 range (both `10.0.0.0/24`); a site ID
//! (0–65535) tells them apart. The layout, one /64 of the tailnet's /48:
//!
//! ```text
//! | tailnet ULA /48 | 0b1a | 0000 | SITE | IPv4 (32 bits) |
//!      48 bits        16     16     16        32
//! ```
//!
//! so site 7's `10.0.0.5` in the tailnet `fd7a:115c:a1e0::/48` is
//! `fd7a:115c:a1e0:b1a:0:7:a00:5`, and its range `10.0.0.0/24` is the
//! route `fd7a:115c:a1e0:b1a:0:7:a00:0/120`. Node addresses use subnet id
//! 0 of the /48, so the two never overlap.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// The subnet id (the 16 bits after the tailnet's /48) of 4via6 addresses.
pub const VIA6_SUBNET_ID: u16 = 0x0b1a;

/// Length of the part in front of the IPv4 address: /48 + subnet id +
/// reserved 16 bits + site ID.
pub const VIA6_SITE_PREFIX_LEN: u8 = 96;

/// The IPv6 address of `v4` at `site`, in the tailnet whose /48 is `ula`.
pub fn via6_address(ula: Ipv6Net, site: u16, v4: Ipv4Addr) -> Ipv6Addr {
    let tailnet = ula.trunc().network().segments();
    let [a, b, c, d] = v4.octets();
    Ipv6Addr::new(
        tailnet[0],
        tailnet[1],
        tailnet[2],
        VIA6_SUBNET_ID,
        0,
        site,
        u16::from_be_bytes([a, b]),
        u16::from_be_bytes([c, d]),
    )
}

/// The IPv6 route for the IPv4 range `range` at `site`: the mapped network
/// address with the IPv4 prefix length plus 96.
pub fn via6_prefix(ula: Ipv6Net, site: u16, range: Ipv4Net) -> Ipv6Net {
    let range = range.trunc();
    let address = via6_address(ula, site, range.network());
    // prefix_len() ≤ 32, so the sum ≤ 128: always a valid length.
    Ipv6Net::new(address, VIA6_SITE_PREFIX_LEN + range.prefix_len()).unwrap_or_default()
}

/// The site and IPv4 address `address` stands for, when it is a 4via6
/// address of the tailnet `ula`.
pub fn parse_via6_address(ula: Ipv6Net, address: Ipv6Addr) -> Option<(u16, Ipv4Addr)> {
    let tailnet = ula.trunc();
    if tailnet.prefix_len() != 48 || !tailnet.contains(&address) {
        return None;
    }
    let s = address.segments();
    if s[3] != VIA6_SUBNET_ID || s[4] != 0 {
        return None;
    }
    let [a, b] = s[6].to_be_bytes();
    let [c, d] = s[7].to_be_bytes();
    Some((s[5], Ipv4Addr::new(a, b, c, d)))
}

/// The site and IPv4 range `prefix` stands for, when it is a 4via6 route
/// of the tailnet `ula` (length 96 to 128).
pub fn parse_via6_prefix(ula: Ipv6Net, prefix: Ipv6Net) -> Option<(u16, Ipv4Net)> {
    let length = prefix.prefix_len().checked_sub(VIA6_SITE_PREFIX_LEN)?;
    // The host bits must be zero, as in any route.
    if prefix.addr() != prefix.network() {
        return None;
    }
    let (site, v4) = parse_via6_address(ula, prefix.addr())?;
    Ipv4Net::new(v4, length).ok().map(|range| (site, range))
}

/// The tailnet's /48, from any of its node IPv6 addresses.
pub fn tailnet_ula(node_address: Ipv6Addr) -> Ipv6Net {
    // 48 is always a valid IPv6 prefix length.
    Ipv6Net::new(node_address, 48)
        .map(|n| n.trunc())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ula() -> Ipv6Net {
        "fd7a:115c:a1e0::/48".parse().expect("valid")
    }

    #[test]
    fn documented_example() {
        let address = via6_address(ula(), 7, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(address.to_string(), "fd7a:115c:a1e0:b1a:0:7:a00:5");
        let route = via6_prefix(ula(), 7, "10.0.0.0/24".parse().expect("valid"));
        assert_eq!(route.to_string(), "fd7a:115c:a1e0:b1a:0:7:a00:0/120");
        assert_eq!(
            parse_via6_prefix(ula(), route),
            Some((7, "10.0.0.0/24".parse().expect("valid")))
        );
    }

    #[test]
    fn node_addresses_and_other_tailnets_are_not_via6() {
        let node: Ipv6Addr = "fd7a:115c:a1e0::5".parse().expect("valid");
        assert_eq!(parse_via6_address(ula(), node), None);
        let other = via6_address(
            "fd00:1:2::/48".parse().expect("valid"),
            7,
            Ipv4Addr::new(10, 0, 0, 5),
        );
        assert_eq!(parse_via6_address(ula(), other), None);
        // Host bits set, or shorter than /96: not a route.
        let host = "fd7a:115c:a1e0:b1a:0:7:a00:5/120".parse().expect("valid");
        assert_eq!(parse_via6_prefix(ula(), host), None);
        let short = "fd7a:115c:a1e0:b1a::/64".parse().expect("valid");
        assert_eq!(parse_via6_prefix(ula(), short), None);
    }

    #[test]
    fn tailnet_ula_truncates_to_48() {
        let node: Ipv6Addr = "fd7a:115c:a1e0::5".parse().expect("valid");
        assert_eq!(tailnet_ula(node), ula());
    }

    proptest! {
        #[test]
        fn address_round_trips(site: u16, v4: u32) {
            let v4 = Ipv4Addr::from(v4);
            let address = via6_address(ula(), site, v4);
            prop_assert_eq!(parse_via6_address(ula(), address), Some((site, v4)));
        }

        #[test]
        fn prefix_round_trips(site: u16, v4: u32, len in 0u8..=32) {
            let range = Ipv4Net::new(Ipv4Addr::from(v4), len).expect("valid").trunc();
            let route = via6_prefix(ula(), site, range);
            prop_assert_eq!(route.prefix_len(), 96 + len);
            prop_assert_eq!(parse_via6_prefix(ula(), route), Some((site, range)));
        }
    }
}
