//! Tailnet address allocation: one IPv4 /32 from the shared address space
//! (RFC 6598, 100.64.0.0/10) and one IPv6 /128 from the tailnet's unique
//! local /48 (RFC 4193) per node.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

/// The tailnet's IPv4 range (RFC 6598 shared address space).
pub const IPV4_RANGE: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 10) {
    Ok(net) => net,
    Err(_) => panic!("100.64.0.0/10 is a valid prefix"),
};

/// Left out of the tailnet, as Tailscale leaves it out of its tailnets
/// (ChromeOS uses it for its virtual machines): never assigned, and not
/// part of `*` as a policy source.
pub const EXCLUDED_V4_RANGE: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(100, 115, 92, 0), 23) {
    Ok(net) => net,
    Err(_) => panic!("100.115.92.0/23 is a valid prefix"),
};

/// Kept free for a future tailnet-wide resolver (the address Tailscale
/// clients use for MagicDNS).
pub const RESERVED_RESOLVER: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 100);

/// Subnet id (the 16 bits after the /48) for node addresses; other subnet
/// ids stay free for 4via6 and future use.
pub const NODE_SUBNET_ID: u16 = 0;

/// Builds the ULA /48 from 5 random bytes: `fd` + 40-bit Global ID
/// (RFC 4193 §3.2). The caller supplies the randomness.
pub fn ula_from_random(global_id: [u8; 5]) -> Ipv6Net {
    let [a, b, c, d, e] = global_id;
    let addr = Ipv6Addr::new(
        u16::from_be_bytes([0xfd, a]),
        u16::from_be_bytes([b, c]),
        u16::from_be_bytes([d, e]),
        0,
        0,
        0,
        0,
        0,
    );
    // A /48 is always a valid IPv6 prefix length.
    Ipv6Net::new(addr, 48).unwrap_or_default()
}

/// Whether `addr` may be handed to a node: inside [`IPV4_RANGE`] and not
/// in [`EXCLUDED_V4_RANGE`], not a `.0` or `.255` (so that no tool
/// mistakes it for a network or broadcast address), not
/// [`RESERVED_RESOLVER`].
pub fn is_assignable_v4(addr: Ipv4Addr) -> bool {
    let last = addr.octets()[3];
    IPV4_RANGE.contains(&addr)
        && !EXCLUDED_V4_RANGE.contains(&addr)
        && last != 0
        && last != 255
        && addr != RESERVED_RESOLVER
}

/// The lowest assignable IPv4 address not in `used`, or `None` when the
/// range is exhausted. Deterministic: the same `used` set always gives the
/// same address. Runs in O(|used|).
pub fn lowest_free_v4(used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let first = u32::from(IPV4_RANGE.network());
    let last = u32::from(IPV4_RANGE.broadcast());
    let mut candidate = next_assignable(first, last)?;
    for &taken in used.range(Ipv4Addr::from(candidate)..) {
        let taken = u32::from(taken);
        if taken > candidate {
            break;
        }
        // taken == candidate: step past it.
        candidate = next_assignable(candidate.checked_add(1)?, last)?;
    }
    Some(Ipv4Addr::from(candidate))
}

/// The node IPv6 address matching an IPv4 tailnet address: subnet
/// [`NODE_SUBNET_ID`] of the ULA with the IPv4 address in the low 32 bits,
/// so it is unique whenever the IPv4 address is.
pub fn v6_for(ula: Ipv6Net, v4: Ipv4Addr) -> Ipv6Addr {
    let mut segments = ula.network().segments();
    segments[3] = NODE_SUBNET_ID;
    let [a, b, c, d] = v4.octets();
    segments[6] = u16::from_be_bytes([a, b]);
    segments[7] = u16::from_be_bytes([c, d]);
    Ipv6Addr::from(segments)
}

fn next_assignable(mut from: u32, last: u32) -> Option<u32> {
    while from <= last {
        if is_assignable_v4(Ipv4Addr::from(from)) {
            return Some(from);
        }
        from = from.checked_add(1)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn first_address_is_100_64_0_1() {
        assert_eq!(
            lowest_free_v4(&BTreeSet::new()),
            Some(Ipv4Addr::new(100, 64, 0, 1))
        );
    }

    #[test]
    fn skips_dot_255_and_dot_0() {
        let used: BTreeSet<_> = (1..=254).map(|i| Ipv4Addr::new(100, 64, 0, i)).collect();
        assert_eq!(lowest_free_v4(&used), Some(Ipv4Addr::new(100, 64, 1, 1)));
    }

    #[test]
    fn fills_the_lowest_hole() {
        let used: BTreeSet<_> = [1, 2, 4]
            .iter()
            .map(|&i| Ipv4Addr::new(100, 64, 0, i))
            .collect();
        assert_eq!(lowest_free_v4(&used), Some(Ipv4Addr::new(100, 64, 0, 3)));
    }

    #[test]
    fn the_excluded_block_is_never_assigned() {
        assert!(is_assignable_v4(Ipv4Addr::new(100, 115, 91, 254)));
        assert!(!is_assignable_v4(Ipv4Addr::new(100, 115, 92, 1)));
        assert!(!is_assignable_v4(Ipv4Addr::new(100, 115, 93, 254)));
        assert!(is_assignable_v4(Ipv4Addr::new(100, 115, 94, 1)));
    }

    #[test]
    fn ula_is_fd_slash_48_and_v6_embeds_v4() {
        let ula = ula_from_random([0x12, 0x34, 0x56, 0x78, 0x9a]);
        assert_eq!(ula.to_string(), "fd12:3456:789a::/48");
        let v6 = v6_for(ula, Ipv4Addr::new(100, 64, 0, 1));
        assert_eq!(v6.to_string(), "fd12:3456:789a::6440:1");
        assert!(ula.contains(&v6));
    }

    proptest! {
        #[test]
        fn allocation_never_repeats_and_stays_in_range(
            steps in proptest::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 1..200)
        ) {
            let mut used = BTreeSet::new();
            for (allocate, index) in steps {
                if allocate || used.is_empty() {
                    let addr = lowest_free_v4(&used).expect("range not exhausted in a test");
                    prop_assert!(is_assignable_v4(addr));
                    prop_assert!(used.insert(addr), "address {} handed out twice", addr);
                } else {
                    let victim = *index.get(&used.iter().copied().collect::<Vec<_>>());
                    used.remove(&victim);
                }
            }
        }
    }
}
