//! `parse_ip_header` on arbitrary bytes: never panics, and what it returns
//! is exactly the addresses at the RFC 791 / RFC 8200 offsets.
#![no_main]

use std::net::IpAddr;

use causeway_mesh::parse_ip_header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(header) = parse_ip_header(data) else {
        return;
    };
    match (header.source, header.destination) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            assert_eq!(data[0] >> 4, 4);
            assert!(data.len() >= 20);
            assert_eq!(s.octets(), data[12..16]);
            assert_eq!(d.octets(), data[16..20]);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            assert_eq!(data[0] >> 4, 6);
            assert!(data.len() >= 40);
            assert_eq!(s.octets(), data[8..24]);
            assert_eq!(d.octets(), data[24..40]);
        }
        _ => panic!("source and destination of different families"),
    }
});
