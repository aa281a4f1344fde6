//! The checks of `plan`/`deploy --cloud aws` flags that need no AWS call,
//! made before connecting: required flags, route syntax, lifecycle days,
//! bucket names, volume size, an app connector's domains. Each error names
//! the flag.

use std::net::IpAddr;

use anyhow::Context;

use super::Lifecycle;
use crate::aws::AwsOptions;
use crate::role::Role;

/// Checks the flags of `opts`; returns the role.
pub fn check_flags(opts: &AwsOptions) -> anyhow::Result<Role> {
    let Some(role) = opts.role else {
        anyhow::bail!("--role is required with --cloud aws");
    };
    if let Some(why) = role.not_built_yet() {
        let built: Vec<&str> = Role::built().into_iter().map(Role::as_str).collect();
        anyhow::bail!(
            "--role {role} is not built yet: {why}; the roles deploy can run today are {}",
            built.join(", ")
        );
    }
    if opts.vpc.is_none() {
        anyhow::bail!("--vpc is required with --cloud aws (the VPC the {role} serves)");
    }
    if role != Role::Control {
        let Some(url) = &opts.control_url else {
            anyhow::bail!(
                "--control-url is required for role {role}: the appliance's config names control"
            );
        };
        if !url.starts_with("http://") && !url.starts_with("https://") {
            anyhow::bail!("--control-url {url:?}: expected http(s)://HOST:PORT");
        }
        if opts.control_public_key.is_none() {
            anyhow::bail!(
                "--control-public-key is required for role {role}: the appliance pins control's key"
            );
        }
    }
    if opts.auth_key_expiry.is_zero() {
        anyhow::bail!(
            "--auth-key-expiry 0: expected a lifetime in seconds (default {}); a key that expires at once registers nothing",
            crate::aws::DEFAULT_AUTH_KEY_EXPIRY_SECONDS
        );
    }
    for r in &opts.routes {
        check_prefix(r).with_context(|| format!("--route {r}"))?;
    }
    check_exit_node_flags(opts, role)?;
    check_app_connector_flags(opts, role)?;
    check_via6_flags(opts, role)?;
    for a in &opts.recorder_allow {
        check_prefix(a).with_context(|| format!("--recorder-allow {a}"))?;
    }
    if role == Role::Recorder && opts.recorder_allow.is_empty() {
        anyhow::bail!(
            "--recorder-allow: expected at least one network (the recorder would refuse every recording)"
        );
    }
    if role == Role::Recorder {
        Lifecycle::new(opts.ia_days, opts.archive_days, opts.expire_days)
            .map_err(anyhow::Error::msg)?;
    }
    if let Some(key) = &opts.kms_key {
        check_kms_key_arn(key).with_context(|| format!("--kms-key {key:?}"))?;
    }
    if let Some(bucket) = &opts.bucket {
        check_bucket_name(bucket).with_context(|| format!("--bucket {bucket:?}"))?;
    }
    if role == Role::Control && opts.ha {
        anyhow::bail!(
            "--ha with --role control: control runs as one instance (its state volume attaches to one instance in one AZ); its Elastic IP and volume carry it across instance replacement instead"
        );
    }
    if !(1..=16384).contains(&opts.state_volume_gib) {
        anyhow::bail!(
            "--state-volume-size {}: expected 1 to 16384 GiB",
            opts.state_volume_gib
        );
    }
    if !(8..=16384).contains(&opts.root_volume_gib) {
        anyhow::bail!(
            "--root-volume-size {}: expected 8 to 16384 GiB",
            opts.root_volume_gib
        );
    }
    Ok(role)
}

/// The flags an exit node or an app connector refuses, and those an exit
/// node alone takes: both advertise routes of their own and masquerade, so
/// `--route` and `--no-snat` mean nothing to them; `--egress-subnet` is for
/// an exit node ([`Role::takes_egress_subnet`]), one instance (the second
/// interface lives in one subnet, so in one availability zone).
fn check_exit_node_flags(opts: &AwsOptions, role: Role) -> anyhow::Result<()> {
    let (what, who) = match role {
        Role::ExitNode => (
            "an exit node advertises 0.0.0.0/0 and ::/0 and nothing else",
            "an exit node",
        ),
        Role::AppConnector => (
            "an app connector advertises the addresses its domains resolve to and nothing else",
            "an app connector",
        ),
        Role::SubnetRouter | Role::Via6 | Role::Recorder | Role::Control | Role::Relay => ("", ""),
    };
    if !who.is_empty() {
        if let Some(r) = opts.routes.first() {
            anyhow::bail!("--route {r} with --role {role}: {what}; --route is for subnet-router");
        }
        if !opts.snat {
            anyhow::bail!(
                "--no-snat with --role {role}: {who} masquerades the tailnet's traffic to its own address (the internet has no route back to 100.64.0.0/10)"
            );
        }
    }
    let Some(subnet) = &opts.egress_subnet else {
        return Ok(());
    };
    if !role.takes_egress_subnet() {
        anyhow::bail!(
            "--egress-subnet {subnet} with --role {role}: only an exit node sends traffic out of an egress subnet"
        );
    }
    let id_ok = subnet
        .strip_prefix("subnet-")
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !id_ok {
        anyhow::bail!("--egress-subnet {subnet:?}: expected a subnet ID, subnet-0123456789abcdef0");
    }
    if opts.ha {
        anyhow::bail!(
            "--egress-subnet with --ha: the egress interface lives in one subnet, so in one availability zone, and an HA pair spans two; deploy one exit node per egress subnet instead"
        );
    }
    Ok(())
}

/// The longest `--route-ttl-floor` the appliance accepts (its
/// `app_connector.route_ttl_floor` bound): 7 days.
const MAX_ROUTE_TTL_FLOOR_SECONDS: u64 = 7 * 24 * 3600;

/// The flags of an app connector: `--domain` is required with it (checked
/// as the appliance checks `app_connector.domains`, with `causeway-dns`'s
/// parser and bounds) and, like `--max-routes` and `--route-ttl-floor`,
/// refused with any other role; an HA pair is refused (two connectors
/// would each learn and advertise what they resolve, and the appliance
/// does not run connector pairs yet).
fn check_app_connector_flags(opts: &AwsOptions, role: Role) -> anyhow::Result<()> {
    if role != Role::AppConnector {
        let given = [
            opts.domains.first().map(|d| format!("--domain {d}")),
            opts.max_routes.map(|n| format!("--max-routes {n}")),
            opts.route_ttl_floor
                .map(|s| format!("--route-ttl-floor {s}")),
        ];
        if let Some(flag) = given.into_iter().flatten().next() {
            anyhow::bail!(
                "{flag} with --role {role}: only an app connector routes domains (--role app-connector)"
            );
        }
        return Ok(());
    }
    if opts.domains.is_empty() {
        anyhow::bail!(
            "--domain is required with --role app-connector: expected at least one domain the connector routes, e.g. --domain app.example.com or --domain '*.example.com'"
        );
    }
    if opts.domains.len() > causeway_dns::MAX_DOMAINS {
        anyhow::bail!(
            "--domain given {} times: expected at most {} domains",
            opts.domains.len(),
            causeway_dns::MAX_DOMAINS
        );
    }
    for d in &opts.domains {
        d.parse::<causeway_dns::DomainPattern>()
            .with_context(|| format!("--domain {d}"))?;
    }
    if let Some(n) = opts.max_routes
        && !(1..=causeway_dns::MAX_ROUTES_LIMIT).contains(&n)
    {
        anyhow::bail!(
            "--max-routes {n}: expected 1 to {}",
            causeway_dns::MAX_ROUTES_LIMIT
        );
    }
    if let Some(secs) = opts.route_ttl_floor
        && secs > MAX_ROUTE_TTL_FLOOR_SECONDS
    {
        anyhow::bail!(
            "--route-ttl-floor {secs}: expected at most {MAX_ROUTE_TTL_FLOOR_SECONDS} seconds (7 days)"
        );
    }
    if opts.ha {
        anyhow::bail!(
            "--ha with --role app-connector: HA pairs of app connectors are not built (two connectors would each learn and advertise what they resolve, and their answers may differ); deploy one connector"
        );
    }
    Ok(())
}

/// The flags of a 4via6 router: `--site-id` (0 to 65535) is required with
/// it and refused with any other role; its routes are IPv4 ranges (4via6
/// maps an IPv4 range into the tailnet's IPv6 range); `--ha` and
/// `--no-snat` are refused, as `--cloud local` refuses them: an HA pair and
/// return routes for a 4via6 site are not built or tested on AWS yet.
fn check_via6_flags(opts: &AwsOptions, role: Role) -> anyhow::Result<()> {
    if role != Role::Via6 {
        if let Some(site) = opts.site_id {
            anyhow::bail!(
                "--site-id {site} with --role {role}: only a 4via6 router advertises its routes under a site ID (--role via6)"
            );
        }
        return Ok(());
    }
    let Some(site) = opts.site_id else {
        anyhow::bail!(
            "--site-id is required with --role via6: expected the site's ID, 0 to 65535, e.g. --site-id 7"
        );
    };
    if u16::try_from(site).is_err() {
        anyhow::bail!("--site-id {site}: expected 0 to 65535");
    }
    if let Some(r) = opts.routes.iter().find(|r| r.contains(':')) {
        anyhow::bail!(
            "--route {r} with --role via6: 4via6 maps IPv4 ranges into the tailnet's IPv6 range; expected an IPv4 prefix such as 10.0.0.0/16"
        );
    }
    if opts.ha {
        anyhow::bail!(
            "--ha with --role via6: HA pairs of 4via6 routers are not built or tested on AWS yet; deploy one router per site"
        );
    }
    if !opts.snat {
        anyhow::bail!(
            "--no-snat with --role via6: a 4via6 router without SNAT (tailnet return routes in the VPC) is not built or tested on AWS yet; drop --no-snat"
        );
    }
    Ok(())
}

/// S3's bucket naming rules: 3-63 of `a-z0-9.-`, starting and ending with
/// a letter or digit, not shaped like an IP address.
pub fn check_bucket_name(name: &str) -> anyhow::Result<()> {
    if !(3..=63).contains(&name.len()) {
        anyhow::bail!("a bucket name has 3 to 63 characters");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        anyhow::bail!("{c:?} is not allowed in a bucket name (only a-z, 0-9, '.', '-')");
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        anyhow::bail!("a bucket name starts and ends with a letter or digit");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() || name.contains("..") {
        anyhow::bail!("a bucket name is not an IP address and has no '..'");
    }
    Ok(())
}

/// A KMS key's ARN, `arn:PARTITION:kms:REGION:ACCOUNT:key/ID`: the
/// recorder's policy names the key itself (an alias or a bare key ID cannot
/// be a policy's resource).
pub fn check_kms_key_arn(arn: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ok = match parts[..] {
        ["arn", partition, "kms", region, account, resource] => {
            !partition.is_empty()
                && !region.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource
                    .strip_prefix("key/")
                    .is_some_and(|id| !id.is_empty() && !id.contains('/'))
        }
        _ => false,
    };
    if !ok {
        anyhow::bail!(
            "expected a KMS key ARN, arn:aws:kms:REGION:ACCOUNT:key/KEY-ID (not an alias or a bare key ID: the recorder's policy grants the key by ARN)"
        );
    }
    Ok(())
}

/// An address prefix: `ADDRESS/LENGTH`, IPv4 or IPv6.
pub fn check_prefix(s: &str) -> anyhow::Result<()> {
    let (addr, len) = s
        .split_once('/')
        .context("expected an address prefix like 10.0.0.0/16")?;
    let addr: IpAddr = addr.parse().context("not an IP address")?;
    let len: u8 = len.parse().context("bad prefix length")?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        anyhow::bail!("prefix length {len} is over {max}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(role: Role) -> AwsOptions {
        let mut o = AwsOptions::new("t".parse().expect("name"));
        o.role = Some(role);
        o.vpc = Some("vpc-1".into());
        o.control_url = Some("https://c:8080".into());
        o.control_public_key = Some("AAAA=".into());
        o
    }

    #[test]
    fn flags_are_checked_before_any_aws_call_naming_the_flag() {
        assert_eq!(
            check_flags(&opts(Role::Control)).expect("valid"),
            Role::Control
        );
        let mut o = opts(Role::SubnetRouter);
        o.vpc = None;
        assert!(
            check_flags(&o)
                .expect_err("no vpc")
                .to_string()
                .contains("--vpc")
        );
        let mut o = opts(Role::SubnetRouter);
        o.control_url = None;
        assert!(
            check_flags(&o)
                .expect_err("no url")
                .to_string()
                .contains("--control-url")
        );
        let mut o = opts(Role::Control);
        o.control_url = None;
        o.control_public_key = None;
        assert!(check_flags(&o).is_ok(), "control needs no control URL");
        let mut o = opts(Role::SubnetRouter);
        o.auth_key_expiry = std::time::Duration::ZERO;
        assert!(
            check_flags(&o)
                .expect_err("no lifetime")
                .to_string()
                .contains("--auth-key-expiry 0")
        );
        let mut o = opts(Role::SubnetRouter);
        o.routes = vec!["10.0.0.0/33".into()];
        assert!(
            format!("{:#}", check_flags(&o).expect_err("bad route"))
                .contains("--route 10.0.0.0/33")
        );
        let mut o = opts(Role::Recorder);
        o.expire_days = 60;
        assert!(
            check_flags(&o)
                .expect_err("order")
                .to_string()
                .contains("--expire-days")
        );
        let mut o = opts(Role::Recorder);
        o.recorder_allow = vec!["100.64.0.0".into()];
        assert!(
            format!("{:#}", check_flags(&o).expect_err("allow"))
                .contains("--recorder-allow 100.64.0.0")
        );
        o.recorder_allow.clear();
        assert!(
            check_flags(&o)
                .expect_err("empty allow")
                .to_string()
                .contains("--recorder-allow")
        );
        let mut o = opts(Role::Recorder);
        o.bucket = Some("Bad_Name".into());
        assert!(format!("{:#}", check_flags(&o).expect_err("bucket")).contains("--bucket"));
        let mut o = opts(Role::Control);
        o.ha = true;
        assert!(
            check_flags(&o)
                .expect_err("control HA")
                .to_string()
                .contains("--ha with --role control")
        );
        let mut o = opts(Role::Control);
        o.state_volume_gib = 0;
        assert!(
            check_flags(&o)
                .expect_err("no volume")
                .to_string()
                .contains("--state-volume-size 0")
        );
        let mut o = opts(Role::Recorder);
        o.root_volume_gib = 4;
        assert!(
            check_flags(&o)
                .expect_err("too small")
                .to_string()
                .contains("--root-volume-size 4")
        );
    }

    #[test]
    fn exit_node_flags_are_checked_naming_the_flag() {
        assert_eq!(
            check_flags(&opts(Role::ExitNode)).expect("valid"),
            Role::ExitNode
        );
        let mut o = opts(Role::ExitNode);
        o.routes = vec!["10.0.0.0/16".into()];
        let err = check_flags(&o).expect_err("route");
        assert!(
            err.to_string()
                .starts_with("--route 10.0.0.0/16 with --role exit-node"),
            "{err}"
        );
        let mut o = opts(Role::ExitNode);
        o.snat = false;
        let err = check_flags(&o).expect_err("no snat");
        assert!(
            err.to_string()
                .starts_with("--no-snat with --role exit-node"),
            "{err}"
        );
        let mut o = opts(Role::ExitNode);
        o.egress_subnet = Some("subnet-0abc123".into());
        assert_eq!(check_flags(&o).expect("valid"), Role::ExitNode);
        o.ha = true;
        let err = check_flags(&o).expect_err("ha");
        assert!(
            err.to_string().starts_with("--egress-subnet with --ha"),
            "{err}"
        );
        let mut o = opts(Role::ExitNode);
        o.egress_subnet = Some("sn-1".into());
        let err = check_flags(&o).expect_err("not an id");
        assert!(
            err.to_string().starts_with("--egress-subnet \"sn-1\""),
            "{err}"
        );
        for role in [Role::SubnetRouter, Role::Recorder, Role::Control] {
            let mut o = opts(role);
            o.egress_subnet = Some("subnet-0abc123".into());
            let err = check_flags(&o).expect_err("not an exit node");
            assert_eq!(
                err.to_string(),
                format!(
                    "--egress-subnet subnet-0abc123 with --role {role}: only an exit node sends traffic out of an egress subnet"
                )
            );
        }
    }

    #[test]
    fn app_connector_flags_are_checked_naming_the_flag() {
        let connector = |domains: &[&str]| {
            let mut o = opts(Role::AppConnector);
            o.domains = domains.iter().map(|d| (*d).to_owned()).collect();
            o
        };
        let mut o = connector(&["app.example.com", "*.example.net"]);
        o.max_routes = Some(65_536);
        o.route_ttl_floor = Some(0);
        assert_eq!(check_flags(&o).expect("valid"), Role::AppConnector);

        let refused = |o: &AwsOptions| format!("{:#}", check_flags(o).expect_err("refused"));
        assert!(
            refused(&connector(&[])).starts_with("--domain is required with --role app-connector"),
            "{}",
            refused(&connector(&[]))
        );
        assert_eq!(
            refused(&connector(&["*.com"])),
            "--domain *.com: app connector domain \"*.com\": a wildcard over a top-level domain is too broad: expected at least *.example.com"
        );
        assert!(
            refused(&connector(&["a.*.example.com"])).starts_with("--domain a.*.example.com: ")
        );
        let many: Vec<String> = (0..=causeway_dns::MAX_DOMAINS)
            .map(|n| format!("a{n}.example.com"))
            .collect();
        let mut o = connector(&[]);
        o.domains = many;
        assert_eq!(
            refused(&o),
            "--domain given 1001 times: expected at most 1000 domains"
        );
        for (max_routes, ttl, expect) in [
            (Some(0), None, "--max-routes 0: expected 1 to 65536"),
            (
                Some(65_537),
                None,
                "--max-routes 65537: expected 1 to 65536",
            ),
            (
                None,
                Some(604_801),
                "--route-ttl-floor 604801: expected at most 604800 seconds (7 days)",
            ),
        ] {
            let mut o = connector(&["app.example.com"]);
            o.max_routes = max_routes;
            o.route_ttl_floor = ttl;
            assert_eq!(refused(&o), expect);
        }
        let mut o = connector(&["app.example.com"]);
        o.routes = vec!["10.0.0.0/16".into()];
        assert!(refused(&o).starts_with("--route 10.0.0.0/16 with --role app-connector"));
        let mut o = connector(&["app.example.com"]);
        o.snat = false;
        assert!(refused(&o).starts_with("--no-snat with --role app-connector"));
        let mut o = connector(&["app.example.com"]);
        o.egress_subnet = Some("subnet-0abc123".into());
        assert_eq!(
            refused(&o),
            "--egress-subnet subnet-0abc123 with --role app-connector: only an exit node sends traffic out of an egress subnet"
        );
        let mut o = connector(&["app.example.com"]);
        o.ha = true;
        assert!(refused(&o).starts_with("--ha with --role app-connector"));

        // The connector's flags with any other role, naming the flag.
        for role in [
            Role::SubnetRouter,
            Role::ExitNode,
            Role::Recorder,
            Role::Control,
        ] {
            let mut o = opts(role);
            o.domains = vec!["app.example.com".into()];
            assert_eq!(
                refused(&o),
                format!(
                    "--domain app.example.com with --role {role}: only an app connector routes domains (--role app-connector)"
                )
            );
            let mut o = opts(role);
            o.max_routes = Some(10);
            assert!(refused(&o).starts_with(&format!("--max-routes 10 with --role {role}")));
            let mut o = opts(role);
            o.route_ttl_floor = Some(60);
            assert!(refused(&o).starts_with(&format!("--route-ttl-floor 60 with --role {role}")));
        }
    }

    #[test]
    fn via6_flags_are_checked_naming_the_flag() {
        let via6 = |site: Option<u32>| {
            let mut o = opts(Role::Via6);
            o.site_id = site;
            o
        };
        assert_eq!(check_flags(&via6(Some(0))).expect("valid"), Role::Via6);
        let mut o = via6(Some(65_535));
        o.routes = vec!["10.0.0.0/16".into(), "10.1.0.0/24".into()];
        assert_eq!(check_flags(&o).expect("valid"), Role::Via6);

        let refused = |o: &AwsOptions| format!("{:#}", check_flags(o).expect_err("refused"));
        assert_eq!(
            refused(&via6(None)),
            "--site-id is required with --role via6: expected the site's ID, 0 to 65535, e.g. --site-id 7"
        );
        assert_eq!(
            refused(&via6(Some(65_536))),
            "--site-id 65536: expected 0 to 65535"
        );
        let mut o = via6(Some(7));
        o.routes = vec!["fd00::/64".into()];
        assert!(
            refused(&o).starts_with("--route fd00::/64 with --role via6: 4via6 maps IPv4 ranges"),
            "{}",
            refused(&o)
        );
        let mut o = via6(Some(7));
        o.ha = true;
        assert!(
            refused(&o)
                .starts_with("--ha with --role via6: HA pairs of 4via6 routers are not built")
        );
        let mut o = via6(Some(7));
        o.snat = false;
        assert!(refused(&o).starts_with("--no-snat with --role via6: "));

        for role in [
            Role::SubnetRouter,
            Role::ExitNode,
            Role::Recorder,
            Role::Control,
        ] {
            let mut o = opts(role);
            o.site_id = Some(7);
            assert_eq!(
                refused(&o),
                format!(
                    "--site-id 7 with --role {role}: only a 4via6 router advertises its routes under a site ID (--role via6)"
                )
            );
        }
    }

    #[test]
    fn a_role_the_appliance_cannot_run_is_refused_by_name() {
        for role in Role::not_built() {
            let err = check_flags(&opts(role)).expect_err("not built");
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("--role {role} is not built yet")),
                "{msg}"
            );
        }
    }

    #[test]
    fn a_kms_key_is_given_by_its_arn() {
        assert!(
            check_kms_key_arn(
                "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
            )
            .is_ok()
        );
        for bad in [
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/recordings",
            "arn:aws:kms:eu-west-1:123456789012:alias/recordings",
            "arn:aws:kms:eu-west-1:1234:key/k",
            "arn:aws:s3:eu-west-1:123456789012:key/k",
            "arn:aws:kms:eu-west-1:123456789012:key/",
        ] {
            assert!(check_kms_key_arn(bad).is_err(), "{bad}");
        }
        let mut o = opts(Role::Recorder);
        o.kms_key = Some("alias/recordings".into());
        assert!(format!("{:#}", check_flags(&o).expect_err("alias")).contains("--kms-key"));
    }

    #[test]
    fn bucket_names_follow_s3_rules() {
        assert!(check_bucket_name("causeway-prod-recordings-123456789012").is_ok());
        for bad in ["ab", "Upper", "a_b", "-ab", "ab-", "10.0.0.1", "a..b"] {
            assert!(check_bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_are_an_address_and_a_length_that_fits() {
        assert!(check_prefix("10.0.0.0/16").is_ok());
        assert!(check_prefix("fd7a:115c:a1e0::/48").is_ok());
        for bad in ["10.0.0.0", "10.0.0/16", "10.0.0.0/x", "::/129"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }
}
