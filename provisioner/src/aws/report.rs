//! What `plan` and `deploy` print: one item per resource with its change,
//! and the whole run as text or JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::DnsMode;
use super::api::Instance;
use super::health::ApplianceHealth;
use super::network::Subnet;
use super::sizing::{Arch, Choice};
use super::spec::SplitDnsEntry;
use crate::role::Role;

/// What happened (deploy) or would happen (plan) to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// Created.
    Create,
    /// Changed in place.
    Update,
    /// Deleted (extra instances, stray rules).
    Delete,
    /// Already as wanted.
    Unchanged,
}

/// One resource in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    /// Kind (`security group`).
    pub kind: &'static str,
    /// Name or id.
    pub name: String,
    /// The change.
    pub change: Change,
    /// What differs, when something does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Item {
    /// An item of `kind` named `name`.
    pub fn new(
        kind: &'static str,
        name: impl Into<String>,
        change: Change,
        detail: Option<String>,
    ) -> Self {
        Self {
            kind,
            name: name.into(),
            change,
            detail,
        }
    }

    /// `create    security group causeway-x-relay (detail)`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{:<9} {} {}",
            change_word(self.change),
            self.kind,
            self.name
        );
        if let Some(d) = &self.detail {
            let _ = write!(line, " ({d})");
        }
        line
    }
}

/// Split DNS as computed for control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SplitDns {
    /// Mode.
    pub mode: DnsMode,
    /// Resolver addresses.
    pub resolvers: Vec<String>,
    /// Entries for control.
    pub entries: Vec<SplitDnsEntry>,
    /// Whether they were registered in control.
    pub registered_in_control: bool,
    /// Why not.
    pub note: String,
}

/// Whether `deploy` asked control about the appliances, and what it said
/// (one entry per instance, in the order of [`Report::instances`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "checked", content = "instances", rename_all = "snake_case")]
pub enum Health {
    /// Control judged every instance.
    Checked(Vec<ApplianceHealth>),
    /// Not asked, and why (empty for `plan`).
    NotChecked(String),
}

/// One recorder as SSH servers reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecorderNode {
    /// Instance `Name`.
    pub instance: String,
    /// The hostname it registers under in control.
    pub hostname: String,
    /// Its tailnet IPv4 address, once control knows it.
    pub tailnet_address: Option<String>,
}

/// The recorders of a deployment, and the producer's `--recorder` list
/// naming all of them (`appliance record --recorder URL,URL`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recorders {
    /// Instance 0 first.
    pub nodes: Vec<RecorderNode>,
    /// `--recorder http://A,http://B`, once every address is known.
    pub producer_flag: Option<String>,
    /// Why the flag is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Recorders {
    /// The recorders among `instances`, with their tailnet addresses from
    /// control's node list (`None`: control's admin API was not given).
    /// A node matches an instance by hostname, as control knows it.
    pub fn new(instances: &[Instance], nodes: Option<&[crate::aws::control::NodeView]>) -> Self {
        let nodes_out: Vec<RecorderNode> = instances
            .iter()
            .map(|i| {
                let tailnet_address = nodes.and_then(|nodes| {
                    super::health::node_of(i, nodes).and_then(|n| {
                        n.addresses.iter().find_map(|a| match a.addr() {
                            std::net::IpAddr::V4(v4) => Some(v4.to_string()),
                            std::net::IpAddr::V6(_) => None,
                        })
                    })
                });
                RecorderNode {
                    instance: i.name.clone(),
                    hostname: i.hostname.clone(),
                    tailnet_address,
                }
            })
            .collect();
        let all: Option<Vec<String>> = nodes_out
            .iter()
            .map(|n| n.tailnet_address.as_ref().map(|a| format!("http://{a}")))
            .collect();
        let (producer_flag, note) = match (all, nodes) {
            (Some(urls), _) if !urls.is_empty() => {
                (Some(format!("--recorder {}", urls.join(","))), None)
            }
            (_, None) => (
                None,
                Some("pass --control-admin-url and --control-admin-token-file to get the recorders' tailnet addresses".to_owned()),
            ),
            _ => (
                None,
                Some("not every recorder has registered with control yet; deploy again once they have joined".to_owned()),
            ),
        };
        Self {
            nodes: nodes_out,
            producer_flag,
            note,
        }
    }
}

/// The result of `plan` or `deploy`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `plan` or `deploy`.
    pub command: &'static str,
    /// Deployment name.
    pub deployment: String,
    /// Role.
    pub role: Role,
    /// Region.
    pub region: String,
    /// VPC.
    pub vpc: String,
    /// Sizing choice and its explanation.
    pub sizing: Choice,
    /// Image and its architecture.
    pub image: String,
    /// Architecture.
    pub arch: Arch,
    /// Chosen subnets.
    pub subnets: Vec<Subnet>,
    /// Advertised routes.
    pub routes: Vec<String>,
    /// Role via6: the site ID the routes are advertised under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site_id: Option<u16>,
    /// Warnings.
    pub warnings: Vec<String>,
    /// Resources.
    pub items: Vec<Item>,
    /// Instances after the run.
    pub instances: Vec<Instance>,
    /// Split DNS.
    pub split_dns: Option<SplitDns>,
    /// The appliances' health (`deploy`).
    pub health: Health,
    /// Role recorder: the recorders and the producer's list of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorders: Option<Recorders>,
    /// Role app-connector: the domains it routes (its routes are learned
    /// from their DNS answers at run time).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
}

impl Report {
    /// Whether every resource is as wanted.
    pub fn unchanged(&self) -> bool {
        self.items.iter().all(|i| i.change == Change::Unchanged)
    }

    /// Every instance runs and, where control was asked, every appliance
    /// is healthy.
    pub fn healthy(&self) -> bool {
        let running =
            !self.instances.is_empty() && self.instances.iter().all(|i| i.state == "running");
        running
            && match &self.health {
                Health::Checked(judged) => judged.iter().all(ApplianceHealth::healthy),
                Health::NotChecked(_) => true,
            }
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let r = self;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} for deployment {}, role {}, in {} ({})",
            r.command, r.deployment, r.role, r.region, r.vpc
        );
        let _ = writeln!(out, "  sizing:  {}", r.sizing.explanation);
        let _ = writeln!(out, "  image:   {} ({})", r.image, r.arch);
        let subnets: Vec<String> = r
            .subnets
            .iter()
            .map(|s| format!("{} ({}, {:?})", s.id, s.az, s.exposure).to_lowercase())
            .collect();
        let _ = writeln!(out, "  subnets: {}", subnets.join(", "));
        if let Some(site) = r.site_id {
            let keys: Vec<String> = r
                .routes
                .iter()
                .map(|range| super::health::via6_route(site, range))
                .collect();
            let _ = writeln!(
                out,
                "  routes:  {} at 4via6 site {site}, advertised as the site's IPv6 routes in the tailnet's range (approved by control's policy autoApprovers.routes {} for tag:via6, or by an admin)",
                r.routes.join(", "),
                keys.join(", ")
            );
        } else if r.domains.is_empty() {
            let _ = writeln!(out, "  routes:  {}", r.routes.join(", "));
        } else {
            let _ = writeln!(out, "  domains: {}", r.domains.join(", "));
            let _ = writeln!(
                out,
                "  routes:  learned from the domains' DNS answers, masqueraded (approved by control's policy autoApprovers.routes for tag:app-connector, or by an admin)"
            );
        }
        for w in &r.warnings {
            let _ = writeln!(out, "  warning: {w}");
        }
        if r.command == "plan" {
            for i in &r.items {
                let _ = writeln!(out, "  {}", i.line());
            }
        }
        for (n, i) in r.instances.iter().enumerate() {
            let _ = writeln!(
                out,
                "  instance {} {} {} in {} ({}), private {}{}",
                i.name,
                i.id,
                i.instance_type,
                i.az,
                i.state,
                i.private_ip,
                i.public_ip
                    .as_ref()
                    .map(|p| format!(", public {p}"))
                    .unwrap_or_default()
            );
            if let Health::Checked(judged) = &r.health
                && let Some(h) = judged.get(n)
            {
                let _ = writeln!(out, "    {}", h.describe());
            }
        }
        if let Health::NotChecked(why) = &r.health
            && !why.is_empty()
        {
            let _ = writeln!(out, "  appliance health: {why}");
        }
        if let Some(rec) = &r.recorders {
            match &rec.producer_flag {
                Some(flag) => {
                    let _ = writeln!(out, "  SSH servers record with: appliance record {flag}");
                }
                None => {
                    let names: Vec<&str> = rec.nodes.iter().map(|n| n.hostname.as_str()).collect();
                    let _ = writeln!(
                        out,
                        "  recorders (hostnames in control): {}; {}",
                        names.join(", "),
                        rec.note.as_deref().unwrap_or_default()
                    );
                }
            }
        }
        if r.role == Role::Control
            && let Some(ip) = r.instances.first().and_then(|i| i.public_ip.as_ref())
        {
            let _ = writeln!(
                out,
                "  control URL for nodes: http://{ip}:{} (its Elastic IP, kept across instance replacement)",
                super::spec::CONTROL_PORT
            );
        }
        if let Some(d) = &r.split_dns {
            let _ = writeln!(
                out,
                "  split DNS via {}: {}",
                dns_label(d.mode),
                d.resolvers.join(", ")
            );
            if d.entries.is_empty() {
                let _ = writeln!(
                    out,
                    "    no private hosted zones are associated with the VPC"
                );
            }
            for e in &d.entries {
                let _ = writeln!(out, "    {} -> {}", e.domain, e.nameservers.join(", "));
            }
            if !d.registered_in_control && !d.entries.is_empty() {
                let _ = writeln!(out, "    note: {}", d.note);
            }
        }
        let count = |c| r.items.iter().filter(|i| i.change == c).count();
        let verb = if r.command == "plan" { "to " } else { "" };
        let _ = writeln!(
            out,
            "{} {verb}create, {} {verb}update, {} {verb}delete, {} unchanged",
            count(Change::Create),
            count(Change::Update),
            count(Change::Delete),
            count(Change::Unchanged)
        );
        out
    }
}

/// How `--dns` reaches the resolvers, in words.
pub fn dns_label(mode: DnsMode) -> &'static str {
    match mode {
        DnsMode::Vpc => "VPC resolver",
        DnsMode::ResolverEndpoint => "Route 53 Resolver inbound endpoint",
    }
}

fn change_word(c: Change) -> &'static str {
    match c {
        Change::Create => "create",
        Change::Update => "update",
        Change::Delete => "delete",
        Change::Unchanged => "unchanged",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::control::NodeView;

    fn recorder(name: &str, hostname: &str) -> Instance {
        let mut i = crate::aws::plan::samples_instance(name, "i-1", Some(1));
        i.hostname = hostname.into();
        i
    }

    #[test]
    fn the_producer_flag_names_every_recorder_once_control_knows_them() {
        let instances = [
            recorder("causeway-prod-recorder-0", "ip-10-0-1-10"),
            recorder("causeway-prod-recorder-1", "ip-10-0-2-10"),
        ];
        let node = |host: &str, v4: &str| NodeView {
            name: host.into(),
            hostname: host.into(),
            addresses: vec![
                format!("{v4}/32").parse().expect("prefix"),
                "fd7a:115c:a1e0::5/128".parse().expect("prefix"),
            ],
            ..NodeView::default()
        };
        let both = [
            node("ip-10-0-2-10", "100.64.0.9"),
            node("ip-10-0-1-10", "100.64.0.5"),
        ];
        let r = Recorders::new(&instances, Some(&both[..]));
        assert_eq!(
            r.producer_flag.as_deref(),
            Some("--recorder http://100.64.0.5,http://100.64.0.9")
        );
        assert_eq!(r.nodes[1].tailnet_address.as_deref(), Some("100.64.0.9"));

        let one = [node("ip-10-0-1-10", "100.64.0.5")];
        let r = Recorders::new(&instances, Some(&one[..]));
        assert_eq!(r.producer_flag, None);
        assert!(r.note.as_deref().is_some_and(|n| n.contains("registered")));
        let r = Recorders::new(&instances, None);
        assert!(
            r.note
                .as_deref()
                .is_some_and(|n| n.contains("--control-admin-url"))
        );
    }

    #[test]
    fn an_item_line_says_the_change_kind_name_and_detail() {
        let item = Item::new(
            "security group",
            "causeway-t-relay",
            Change::Create,
            Some("inbound only: udp 41641 from 0.0.0.0/0".into()),
        );
        assert_eq!(
            item.line(),
            "create    security group causeway-t-relay (inbound only: udp 41641 from 0.0.0.0/0)"
        );
        let bare = Item::new("IAM role", "r", Change::Unchanged, None);
        assert_eq!(bare.line(), "unchanged IAM role r");
    }
}
