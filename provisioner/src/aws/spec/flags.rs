//! The checks of `plan`/`deploy --cloud aws` flags that need no AWS call,
//! made before connecting: required flags, route syntax, lifecycle days,
//! bucket names, volume size. Each error names the flag.

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
    if let Some(why) = role.not_built_yet().or(role.not_on_aws_yet()) {
        let built: Vec<&str> = Role::built_on_aws().into_iter().map(Role::as_str).collect();
        anyhow::bail!(
            "--role {role} is not built yet: {why}; the roles deploy --cloud aws can run today are {}",
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
    fn a_role_the_appliance_cannot_run_is_refused_by_name() {
        for role in Role::not_built().into_iter().chain([Role::ExitNode]) {
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
