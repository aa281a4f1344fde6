//! The `resolv.conf` a node writes while its resolver runs: the original
//! file's search domains and options kept, its nameservers replaced by the
//! node resolver, and the tailnet's domain searched first so that a bare
//! host name (`ssh db1`) finds a tailnet node. The original itself is kept
//! by the shell and put back byte for byte; this only renders the text.

use std::net::IpAddr;

/// The first line of every file we write, so that a reader knows who
/// wrote it and that it is temporary.
pub const WRITTEN_BY: &str = "# Written by the Causeway appliance (node.accept_dns) while it runs; the original is put back when it stops.";

/// `original` (the file as it was; unparsable lines are dropped, as glibc
/// ignores them) pointed at `resolver`, with `tailnet_domain` first in the
/// search list when there is one.
pub fn resolv_conf_pointing_at(
    original: &[u8],
    resolver: IpAddr,
    tailnet_domain: Option<&str>,
) -> String {
    let (mut config, _) = resolv_conf::Config::parse_with_errors(original);
    config.nameservers = vec![resolver.into()];
    let mut search: Vec<String> = tailnet_domain
        .filter(|domain| !domain.is_empty())
        .map(|domain| domain.trim_end_matches('.').to_owned())
        .into_iter()
        .collect();
    let kept = config
        .get_search()
        .cloned()
        .or_else(|| config.get_domain().map(|domain| vec![domain.clone()]))
        .unwrap_or_default();
    for domain in kept {
        if !search.contains(&domain) {
            search.push(domain);
        }
    }
    if !search.is_empty() {
        config.set_search(search);
    }
    format!("{WRITTEN_BY}\n{config}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESOLVER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(100, 100, 100, 100));

    #[test]
    fn nameservers_are_replaced_and_search_and_options_kept() {
        let original = b"# from DHCP\nnameserver 198.19.0.2\nnameserver 198.19.0.3\nsearch corp.internal ec2.internal\noptions ndots:2 timeout:3 edns0\n";

        let written = resolv_conf_pointing_at(original, RESOLVER, Some("tailnet.example"));

        let (parsed, errors) = resolv_conf::Config::parse_with_errors(written.as_bytes());
        assert!(errors.is_empty(), "{errors:?}");
        assert!(written.starts_with(WRITTEN_BY), "{written}");
        assert_eq!(parsed.nameservers, vec![RESOLVER.into()]);
        assert_eq!(
            parsed.get_search().map(Vec::as_slice),
            Some(
                &[
                    "tailnet.example".to_owned(),
                    "corp.internal".to_owned(),
                    "ec2.internal".to_owned()
                ][..]
            )
        );
        assert_eq!((parsed.ndots, parsed.timeout, parsed.edns0), (2, 3, true));
    }

    #[test]
    fn an_empty_or_missing_original_gives_just_the_resolver_and_the_domain() {
        let written = resolv_conf_pointing_at(b"", RESOLVER, Some("tailnet.example."));

        assert_eq!(
            written,
            format!("{WRITTEN_BY}\nnameserver 100.100.100.100\nsearch tailnet.example\n")
        );
        let no_domain = resolv_conf_pointing_at(b"garbage line\n", RESOLVER, None);
        assert_eq!(
            no_domain,
            format!("{WRITTEN_BY}\nnameserver 100.100.100.100\n")
        );
    }

    #[test]
    fn a_domain_line_becomes_the_second_search_entry_and_is_not_repeated() {
        let written = resolv_conf_pointing_at(
            b"domain tailnet.example\nnameserver 10.0.0.2\n",
            RESOLVER,
            Some("tailnet.example"),
        );

        assert!(written.contains("search tailnet.example\n"), "{written}");
        assert!(!written.contains("10.0.0.2"), "{written}");
    }
}
