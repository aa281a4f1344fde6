//! Split DNS: which domains control sends to which resolvers.

use std::collections::BTreeSet;

use serde::Serialize;

/// A split-DNS entry for control: a domain and the nameservers for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SplitDnsEntry {
    /// The private zone's name, without the trailing dot.
    pub domain: String,
    /// Resolver addresses.
    pub nameservers: Vec<String>,
}

/// The domain of the VPC's own private DNS names (hostnames of instances),
/// which only the VPC resolver answers: `ec2.internal` in us-east-1,
/// `REGION.compute.internal` elsewhere.
pub fn vpc_internal_domain(region: &str) -> String {
    if region == "us-east-1" {
        "ec2.internal".into()
    } else {
        format!("{region}.compute.internal")
    }
}

/// Split-DNS entries: each private zone's domain → the resolvers.
pub fn split_dns_entries(zones: &[String], resolvers: &[String]) -> Vec<SplitDnsEntry> {
    let domains: BTreeSet<String> = zones
        .iter()
        .map(|z| z.trim_end_matches('.').to_owned())
        .collect();
    domains
        .into_iter()
        .map(|domain| SplitDnsEntry {
            domain,
            nameservers: resolvers.to_vec(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vpc_internal_domain_follows_the_region() {
        assert_eq!(vpc_internal_domain("us-east-1"), "ec2.internal");
        assert_eq!(
            vpc_internal_domain("eu-west-1"),
            "eu-west-1.compute.internal"
        );
    }

    #[test]
    fn split_dns_entries_strip_the_dot_and_dedupe() {
        let e = split_dns_entries(
            &[
                "corp.internal.".into(),
                "db.corp.internal.".into(),
                "corp.internal.".into(),
            ],
            &["10.0.0.2".into()],
        );
        let domains: Vec<&str> = e.iter().map(|e| e.domain.as_str()).collect();
        assert_eq!(domains, ["corp.internal", "db.corp.internal"]);
        assert_eq!(e[0].nameservers, ["10.0.0.2"]);
    }
}
