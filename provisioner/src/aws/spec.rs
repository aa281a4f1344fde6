//! What a deployment should look like in AWS, as plain values: names,
//! tags, policy documents, user data, lifecycle rules, firewall rules
//! (docs/reference/aws-contract.md). Pure, so the contract is unit-tested.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::json;

use crate::name::DeploymentName;
use crate::role::Role;

/// The WireGuard UDP port, the only one open inbound.
pub const WIREGUARD_PORT: u16 = 41641;
/// Control's node-facing TCP port.
pub const CONTROL_PORT: u16 = 8080;
/// Tag naming the deployment; `destroy` deletes what carries it.
pub const TAG_DEPLOYMENT: &str = "causeway:deployment";
/// Tag naming the role.
pub const TAG_ROLE: &str = "causeway:role";
/// Tag marking our appliance images.
pub const TAG_IMAGE: &str = "causeway:image";
/// Tag giving an image's architecture.
pub const TAG_ARCH: &str = "causeway:arch";
/// Tag on an instance: the launch template version it was launched from,
/// so `deploy` knows which instances a template change must replace.
pub const TAG_TEMPLATE_VERSION: &str = "causeway:template-version";
/// The id of the recordings lifecycle rule.
pub const LIFECYCLE_RULE_ID: &str = "causeway-recordings";
/// Name of the inline policy that reads the auth-key secret.
pub const SECRET_POLICY_NAME: &str = "causeway-auth-key";
/// Name of the inline policy that writes recordings.
pub const RECORDINGS_POLICY_NAME: &str = "causeway-recordings";
/// Days after which incomplete multipart uploads are aborted.
pub const ABORT_MPU_DAYS: i32 = 7;

/// The names of a deployment's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Deployment.
    pub deployment: DeploymentName,
    /// Role.
    pub role: Role,
}

impl Names {
    /// Names for `deployment`'s `role`.
    pub fn new(deployment: DeploymentName, role: Role) -> Self {
        Self { deployment, role }
    }

    /// `causeway-NAME-ROLE`: security group, launch template, IAM role and
    /// instance profile, and a single instance.
    pub fn base(&self) -> String {
        format!("causeway-{}-{}", self.deployment, self.role)
    }

    /// The `Name` of instance `index` (`-0`, `-1` only for an HA pair).
    pub fn instance(&self, index: usize, ha: bool) -> String {
        if ha {
            format!("{}-{index}", self.base())
        } else {
            self.base()
        }
    }

    /// The auth key's secret: `causeway/NAME/ROLE-authkey`.
    pub fn secret(&self) -> String {
        format!("causeway/{}/{}-authkey", self.deployment, self.role)
    }

    /// The resolver endpoint's security group.
    pub fn dns_security_group(&self) -> String {
        format!("causeway-{}-dns", self.deployment)
    }

    /// The resolver endpoint.
    pub fn resolver_endpoint(&self) -> String {
        format!("causeway-{}-dns", self.deployment)
    }

    /// The recordings bucket, unless `--bucket` names one.
    pub fn bucket(&self, account: &str) -> String {
        format!("causeway-{}-recordings-{account}", self.deployment)
    }

    /// The contract's tags, with `Name`.
    pub fn tags(&self, name: &str) -> Vec<(String, String)> {
        vec![
            (TAG_DEPLOYMENT.to_owned(), self.deployment.to_string()),
            (TAG_ROLE.to_owned(), self.role.to_string()),
            ("Name".to_owned(), name.to_owned()),
        ]
    }
}

/// The non-secret appliance config put in user data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplianceConfig {
    /// The role.
    pub role: Role,
    /// Control's node-facing URL.
    pub control_url: String,
    /// Control's public key (base64).
    pub control_public_key: String,
    /// The auth key's secret ARN (never the key).
    pub auth_key_secret: Option<String>,
    /// Advertised routes.
    pub routes: Vec<String>,
    /// Masquerade tailnet sources.
    pub snat: bool,
}

/// The appliance's TOML config for user data: control URL and key, the
/// auth key's secret ARN, routes. Never the key itself.
pub fn user_data(c: &ApplianceConfig) -> String {
    let q = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let mut out = String::new();
    out.push_str(&format!(
        "# Causeway appliance config, role {} (written by provisioner; no secrets)\n",
        c.role
    ));
    out.push_str("state_dir = \"/var/lib/causeway\"\n");
    if c.role == Role::Control {
        out.push_str(&format!(
            "\n[control]\nlisten = \"0.0.0.0:{CONTROL_PORT}\"\nadmin_listen = \"127.0.0.1:8081\"\n"
        ));
        return out;
    }
    out.push_str("\n[node]\n");
    out.push_str(&format!("control_url = {}\n", q(&c.control_url)));
    out.push_str(&format!(
        "control_public_key = {}\n",
        q(&c.control_public_key)
    ));
    if let Some(arn) = &c.auth_key_secret {
        out.push_str(&format!("auth_key_secret = {}\n", q(arn)));
    }
    if c.role.advertises_routes() {
        out.push_str("\n[subnet_router]\nroutes = [\n");
        for r in &c.routes {
            out.push_str(&format!("  {{ prefix = {}, snat = {} }},\n", q(r), c.snat));
        }
        out.push_str("]\n");
    }
    out
}

/// The trust policy of the instance role: EC2 may assume it.
pub fn trust_policy() -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole"
        }]
    })
    .to_string()
}

/// The inline policy reading exactly one secret.
pub fn secret_policy(secret_arn: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "ReadOwnAuthKey",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": secret_arn
        }]
    })
    .to_string()
}

/// The recorder's inline policy: write recordings, locate the bucket; read
/// and list only for the web UI.
pub fn recordings_policy(bucket: &str, ui: bool) -> String {
    let mut statements = vec![
        json!({
            "Sid": "WriteRecordings",
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": format!("arn:aws:s3:::{bucket}/*")
        }),
        json!({
            "Sid": "LocateBucket",
            "Effect": "Allow",
            "Action": "s3:GetBucketLocation",
            "Resource": format!("arn:aws:s3:::{bucket}")
        }),
    ];
    if ui {
        statements.push(json!({
            "Sid": "ReadRecordings",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": format!("arn:aws:s3:::{bucket}/*")
        }));
        statements.push(json!({
            "Sid": "ListRecordings",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": format!("arn:aws:s3:::{bucket}")
        }));
    }
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

/// The bucket policy refusing every request not made over TLS.
pub fn tls_only_bucket_policy(bucket: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}
        }]
    })
    .to_string()
}

/// Whether two JSON policy documents mean the same (IAM returns them
/// URL-encoded and reformatted; compare parsed values).
pub fn same_policy(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The recordings lifecycle: days to Standard-IA, to Glacier, to expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Lifecycle {
    /// Days until `STANDARD_IA`.
    pub ia_days: i32,
    /// Days until `GLACIER`.
    pub archive_days: i32,
    /// Days until deletion.
    pub expire_days: i32,
    /// Days until incomplete multipart uploads are aborted.
    pub abort_multipart_days: i32,
}

impl Lifecycle {
    /// Checks S3's rules (Standard-IA after at least 30 days) and the order
    /// IA < archive < expiry; errors name the flags.
    pub fn new(ia_days: i32, archive_days: i32, expire_days: i32) -> Result<Self, String> {
        if ia_days < 30 {
            return Err(format!(
                "--ia-days {ia_days}: S3 moves objects to STANDARD_IA after at least 30 days"
            ));
        }
        if archive_days <= ia_days {
            return Err(format!(
                "--archive-days {archive_days} must be greater than --ia-days {ia_days}"
            ));
        }
        if expire_days <= archive_days {
            return Err(format!(
                "--expire-days {expire_days} must be greater than --archive-days {archive_days}"
            ));
        }
        Ok(Self {
            ia_days,
            archive_days,
            expire_days,
            abort_multipart_days: ABORT_MPU_DAYS,
        })
    }
}

/// One inbound rule of a security group, reduced to what we compare.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct IngressRule {
    /// `udp`, `tcp`, `-1`.
    pub protocol: String,
    /// First port.
    pub from_port: i32,
    /// Last port.
    pub to_port: i32,
    /// An IPv4 or IPv6 CIDR.
    pub cidr: String,
}

impl IngressRule {
    fn new(protocol: &str, port: u16, cidr: &str) -> Self {
        Self {
            protocol: protocol.to_owned(),
            from_port: i32::from(port),
            to_port: i32::from(port),
            cidr: cidr.to_owned(),
        }
    }
}

/// The appliance's inbound rules, from anywhere and nothing else: the
/// WireGuard UDP port for nodes, control's TCP port (the Noise channel
/// nodes dial) for role `control`, which runs no WireGuard node.
pub fn appliance_ingress(role: Role) -> BTreeSet<IngressRule> {
    let (protocol, port) = listen_port(role);
    [
        IngressRule::new(protocol, port, "0.0.0.0/0"),
        IngressRule::new(protocol, port, "::/0"),
    ]
    .into_iter()
    .collect()
}

/// The one port a role listens on from the internet: `("udp", 41641)` for
/// nodes, `("tcp", 8080)` for control.
pub fn listen_port(role: Role) -> (&'static str, u16) {
    match role {
        Role::Control => ("tcp", CONTROL_PORT),
        Role::SubnetRouter
        | Role::Via6
        | Role::ExitNode
        | Role::AppConnector
        | Role::Recorder
        | Role::Relay => ("udp", WIREGUARD_PORT),
    }
}

/// The resolver endpoint's inbound rules: DNS over TCP and UDP from the
/// VPC and the tailnet.
pub fn dns_ingress(vpc_cidrs: &[String]) -> BTreeSet<IngressRule> {
    let mut out = BTreeSet::new();
    for cidr in vpc_cidrs
        .iter()
        .map(String::as_str)
        .chain([super::network::TAILNET_CIDR])
    {
        out.insert(IngressRule::new("tcp", 53, cidr));
        out.insert(IngressRule::new("udp", 53, cidr));
    }
    out
}

/// Rules to add and rules to remove so `actual` becomes `wanted`.
pub fn rule_diff(
    wanted: &BTreeSet<IngressRule>,
    actual: &BTreeSet<IngressRule>,
) -> (Vec<IngressRule>, Vec<IngressRule>) {
    (
        wanted.difference(actual).cloned().collect(),
        actual.difference(wanted).cloned().collect(),
    )
}

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

    fn names(role: Role) -> Names {
        Names::new("prod".parse().expect("valid"), role)
    }

    #[test]
    fn names_follow_the_contract() {
        let n = names(Role::SubnetRouter);
        assert_eq!(n.base(), "causeway-prod-subnet-router");
        assert_eq!(n.instance(1, true), "causeway-prod-subnet-router-1");
        assert_eq!(n.instance(0, false), "causeway-prod-subnet-router");
        assert_eq!(n.secret(), "causeway/prod/subnet-router-authkey");
        assert_eq!(
            n.bucket("123456789012"),
            "causeway-prod-recordings-123456789012"
        );
        assert_eq!(n.dns_security_group(), "causeway-prod-dns");
        let tags = n.tags("x");
        assert!(tags.contains(&("causeway:deployment".into(), "prod".into())));
        assert!(tags.contains(&("causeway:role".into(), "subnet-router".into())));
    }

    #[test]
    fn user_data_holds_the_secret_arn_and_routes_and_parses_as_toml() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:causeway/prod/subnet-router-authkey-AbCdEf";
        let text = user_data(&ApplianceConfig {
            role: Role::SubnetRouter,
            control_url: "https://control.example:8080".into(),
            control_public_key: "AAAA=".into(),
            auth_key_secret: Some(arn.into()),
            routes: vec!["10.0.0.0/16".into(), "10.1.0.0/16".into()],
            snat: false,
        });
        let v: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert_eq!(v["node"]["auth_key_secret"].as_str(), Some(arn));
        let routes = v["subnet_router"]["routes"].as_array().expect("routes");
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[1]["prefix"].as_str(), Some("10.1.0.0/16"));
        assert_eq!(routes[0]["snat"].as_bool(), Some(false));
        assert!(!text.contains("auth_key_file"));
    }

    #[test]
    fn a_recorder_gets_no_routes_and_control_no_node() {
        let mut c = ApplianceConfig {
            role: Role::Recorder,
            control_url: "http://c:8080".into(),
            control_public_key: "AAAA=".into(),
            auth_key_secret: None,
            routes: vec!["10.0.0.0/16".into()],
            snat: true,
        };
        assert!(!user_data(&c).contains("subnet_router"));
        c.role = Role::Control;
        let text = user_data(&c);
        assert!(
            text.contains("[control]") && !text.contains("[node]"),
            "{text}"
        );
    }

    #[test]
    fn the_secret_policy_names_exactly_one_secret_and_one_action() {
        let v: serde_json::Value = serde_json::from_str(&secret_policy("arn:s")).expect("json");
        let st = v["Statement"].as_array().expect("statements");
        assert_eq!(st.len(), 1);
        assert_eq!(st[0]["Action"], "secretsmanager:GetSecretValue");
        assert_eq!(st[0]["Resource"], "arn:s");
    }

    #[test]
    fn the_recorder_policy_adds_read_and_list_only_for_the_ui() {
        let actions = |ui| {
            let v: serde_json::Value =
                serde_json::from_str(&recordings_policy("b", ui)).expect("json");
            let mut a: Vec<String> = v["Statement"]
                .as_array()
                .expect("statements")
                .iter()
                .map(|s| s["Action"].as_str().expect("one action").to_owned())
                .collect();
            a.sort();
            a
        };
        assert_eq!(actions(false), ["s3:GetBucketLocation", "s3:PutObject"]);
        assert_eq!(
            actions(true),
            [
                "s3:GetBucketLocation",
                "s3:GetObject",
                "s3:ListBucket",
                "s3:PutObject"
            ]
        );
    }

    #[test]
    fn policies_compare_by_meaning_not_by_spelling() {
        assert!(same_policy(r#"{"a": 1, "b": [2]}"#, r#"{"b":[2],"a":1}"#));
        assert!(!same_policy(r#"{"a": 1}"#, r#"{"a": 2}"#));
    }

    #[test]
    fn lifecycle_days_are_checked_naming_the_flag() {
        assert_eq!(
            Lifecycle::new(30, 90, 365).expect("defaults"),
            Lifecycle {
                ia_days: 30,
                archive_days: 90,
                expire_days: 365,
                abort_multipart_days: 7
            }
        );
        assert!(
            Lifecycle::new(10, 90, 365)
                .expect_err("too early")
                .contains("--ia-days")
        );
        assert!(
            Lifecycle::new(30, 30, 365)
                .expect_err("order")
                .contains("--archive-days")
        );
        assert!(
            Lifecycle::new(30, 90, 90)
                .expect_err("order")
                .contains("--expire-days")
        );
    }

    #[test]
    fn rule_diff_adds_missing_and_removes_extra_rules() {
        let wanted = appliance_ingress(Role::SubnetRouter);
        let mut actual = BTreeSet::new();
        actual.insert(IngressRule::new("tcp", 22, "0.0.0.0/0"));
        actual.insert(IngressRule::new("udp", WIREGUARD_PORT, "0.0.0.0/0"));
        let (add, remove) = rule_diff(&wanted, &actual);
        assert_eq!(add, vec![IngressRule::new("udp", WIREGUARD_PORT, "::/0")]);
        assert_eq!(remove, vec![IngressRule::new("tcp", 22, "0.0.0.0/0")]);
        assert_eq!(rule_diff(&wanted, &wanted), (vec![], vec![]));
    }

    #[test]
    fn dns_rules_cover_the_vpc_and_the_tailnet_over_tcp_and_udp() {
        let rules = dns_ingress(&["10.0.0.0/16".into()]);
        assert_eq!(rules.len(), 4);
        assert!(rules.contains(&IngressRule::new("tcp", 53, "100.64.0.0/10")));
    }

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
