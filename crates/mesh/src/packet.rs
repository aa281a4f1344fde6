//! Just enough of an IP header to route a packet: version, source and
//! destination (RFC 791 §3.1, RFC 8200 §3).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The addresses of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpHeader {
    /// Source address.
    pub source: IpAddr,
    /// Destination address.
    pub destination: IpAddr,
}

const IPV4_HEADER_MIN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;

/// Reads the source and destination of an IPv4 or IPv6 packet; `None` for
/// anything too short or of another version.
pub fn parse_ip_header(packet: &[u8]) -> Option<IpHeader> {
    match packet.first()? >> 4 {
        4 if packet.len() >= IPV4_HEADER_MIN => {
            let source: [u8; 4] = packet[12..16].try_into().ok()?;
            let destination: [u8; 4] = packet[16..20].try_into().ok()?;
            Some(IpHeader {
                source: Ipv4Addr::from(source).into(),
                destination: Ipv4Addr::from(destination).into(),
            })
        }
        6 if packet.len() >= IPV6_HEADER_LEN => {
            let source: [u8; 16] = packet[8..24].try_into().ok()?;
            let destination: [u8; 16] = packet[24..40].try_into().ok()?;
            Some(IpHeader {
                source: Ipv6Addr::from(source).into(),
                destination: Ipv6Addr::from(destination).into(),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_ipv4_addresses() {
        let mut packet = [0u8; 20];
        packet[0] = 0x45;
        packet[12..16].copy_from_slice(&[100, 64, 0, 1]);
        packet[16..20].copy_from_slice(&[198, 19, 1, 10]);
        let header = parse_ip_header(&packet).expect("valid header");
        assert_eq!(header.source, IpAddr::from([100, 64, 0, 1]));
        assert_eq!(header.destination, IpAddr::from([198, 19, 1, 10]));
    }

    #[test]
    fn truncated_ipv6_is_refused() {
        let mut packet = [0u8; 39];
        packet[0] = 0x60;
        assert_eq!(parse_ip_header(&packet), None);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_ip_header(&bytes);
        }
    }
}
