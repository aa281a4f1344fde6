//! The resolvers an exit node forwards to: the nameservers of its own
//! `resolv.conf`, parsed by the `resolv-conf` crate.

use std::net::{IpAddr, SocketAddr};

use crate::DNS_PORT;

/// Nameservers used, at most: glibc's `MAXNS`, which ignores the rest too.
pub const MAX_UPSTREAMS: usize = 3;

/// The resolvers named in `resolv.conf` text, in order, on port 53, less
/// any of `own` (forwarding to ourselves would loop); glibc's default
/// (the loopback address) when the file names none. Lines that do not
/// parse are skipped, as glibc skips them, and returned for the log.
pub fn upstreams_from_resolv_conf(
    text: &[u8],
    own: &[IpAddr],
) -> (Vec<SocketAddr>, Vec<resolv_conf::ParseError>) {
    let (config, errors) = resolv_conf::Config::parse_with_errors(text);
    let upstreams = config
        .get_nameservers_or_local()
        .iter()
        .map(IpAddr::from)
        .map(|ip| ip.to_canonical())
        .filter(|ip| !own.contains(ip))
        .take(MAX_UPSTREAMS)
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .collect();
    (upstreams, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("a socket address")
    }

    #[test]
    fn nameservers_come_in_order_at_most_three_never_our_own_address() {
        let text = b"# written by the test\nsearch example\nnameserver 198.18.100.53\nnameserver 100.64.0.5\nnameserver 2001:db8::53\nnameserver 198.18.100.54\nnameserver 198.18.100.55\noptions ndots:1\n";
        let own = ["100.64.0.5".parse().expect("ip")];

        let (found, errors) = upstreams_from_resolv_conf(text, &own);

        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            found,
            [
                addr("198.18.100.53:53"),
                addr("[2001:db8::53]:53"),
                addr("198.18.100.54:53")
            ]
        );
    }

    #[test]
    fn no_nameserver_means_the_local_one_and_a_bad_line_is_skipped_and_reported() {
        let (found, errors) = upstreams_from_resolv_conf(b"search example\n", &[]);
        assert!(errors.is_empty());
        assert!(!found.is_empty());
        assert!(found.iter().all(|a| a.ip().is_loopback()), "{found:?}");

        let (found, errors) = upstreams_from_resolv_conf(
            b"nameserver not-an-address\nnameserver 198.18.100.53\n",
            &[],
        );

        assert_eq!(found, [addr("198.18.100.53:53")]);
        assert_eq!(errors.len(), 1, "{errors:?}");
    }
}
