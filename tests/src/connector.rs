//! An app connector beside a test deployment, for `tests/tests/app_connector.rs`
//! and the benchmark `connector-bench`: "the internet" (see
//! [`crate::internet`]) gains an authoritative resolver for `apps.example`
//! (dnsmasq reading a hosts file), and a connector node on the public
//! bridge, with a route to the apps' range through the internet namespace,
//! resolves `*.apps.example` for the tailnet.
//!
//! ```text
//! inet      198.18.0.250 (bridge); on lo: the apps' addresses, and
//!           198.18.100.53 (dnsmasq, only apps.example, from the hosts file)
//! connector 198.18.0.22: `[app_connector]` and the node resolver; its
//!           resolv.conf named 198.18.100.53 before the node resolver took
//!           it over; route to APPS_RANGE via inet
//! ```

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::internet::{self, Internet};
use crate::local::Netns;
use crate::{ExtraNode, ProcessRecord, TestDeployment, WAIT, rewrite_file, wait_until};

/// The connector's public address.
pub const CONNECTOR_ADDR: &str = "198.18.0.22";
/// The apps' authoritative resolver.
pub const APPS_RESOLVER: &str = "198.18.100.53";
/// The domain it serves.
pub const APPS_ZONE: &str = "apps.example";
/// Where the apps' addresses lie: reached only through the connector.
pub const APPS_RANGE: &str = "198.18.64.0/18";
/// The tag of the connector's auth key, which the policy lets approve
/// public routes.
pub const CONNECTOR_TAG: &str = "tag:connector";

/// The running pieces.
pub struct ConnectorSite {
    /// The internet namespace (echo server on every address, port 8000).
    pub inet: Internet,
    /// The apps' hosts file (rewrite it and send dnsmasq SIGHUP).
    pub hosts: PathBuf,
    /// dnsmasq.
    pub dns: ProcessRecord,
    /// The connector's namespace.
    pub ns: Netns,
    /// The connector node.
    pub node: ExtraNode,
    /// Its status once it answered DNS.
    pub status: Value,
}

impl ConnectorSite {
    /// The connector's status now.
    pub fn status(&self, t: &TestDeployment) -> anyhow::Result<Value> {
        t.status_in(&self.ns, &self.node.state_dir)
    }

    /// Rewrites the hosts file and makes dnsmasq read it again.
    pub fn set_hosts(&self, hosts: &[(String, String)]) {
        write_hosts(&self.hosts, hosts);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.dns.pid),
            nix::sys::signal::Signal::SIGHUP,
        )
        .expect("dnsmasq re-reads its hosts");
    }
}

/// Starts the internet with `hosts` (name below [`APPS_ZONE`] → address
/// inside [`APPS_RANGE`]; the internet holds `app_addresses` on its
/// loopback) served with `ttl_secs`, sets a policy that approves
/// [`CONNECTOR_TAG`]'s public routes and lets everyone reach everything,
/// and starts a connector whose `[app_connector]` section is `section`;
/// returns once it answers DNS.
pub fn start(
    t: &mut TestDeployment,
    hosts: &[(String, String)],
    app_addresses: &[String],
    ttl_secs: u32,
    section: &str,
) -> ConnectorSite {
    let root = t.dep().paths().root().to_owned();
    let inet = internet::start_internet(t);
    for address in app_addresses
        .iter()
        .map(String::as_str)
        .chain([APPS_RESOLVER])
    {
        inet.ns
            .ip(&["addr", "add", &format!("{address}/32"), "dev", "lo"])
            .unwrap_or_else(|e| panic!("adding {address} to the internet: {e:#}"));
    }
    let hosts_file = root.join("apps.hosts");
    write_hosts(&hosts_file, hosts);
    let mut dnsmasq = inet.ns.command("dnsmasq");
    dnsmasq.args([
        "--keep-in-foreground".to_owned(),
        "--no-resolv".to_owned(),
        "--no-hosts".to_owned(),
        "--user=root".to_owned(),
        "--pid-file=".to_owned(),
        "--bind-interfaces".to_owned(),
        format!("--listen-address={APPS_RESOLVER}"),
        format!("--local=/{APPS_ZONE}/"),
        format!("--addn-hosts={}", hosts_file.display()),
        format!("--local-ttl={ttl_secs}"),
        // The benchmark asks thousands of names: answer from the file, not
        // from a cache that would have to hold them.
        "--cache-size=0".to_owned(),
    ]);
    let dns = t.spawn_recorded(
        "apps-dns",
        inet.ns.name(),
        &mut dnsmasq,
        &root.join("apps-dns.log"),
    );

    let policy = root.join("connector-policy.hujson");
    std::fs::write(
        &policy,
        format!(
            r#"{{"tagOwners": {{"tag:subnet-router": ["autogroup:admin"], "{CONNECTOR_TAG}": ["autogroup:admin"]}},
                "autoApprovers": {{"routes": {{"{vpc}": ["tag:subnet-router"], "0.0.0.0/0": ["{CONNECTOR_TAG}"]}}}},
                "acls": [{{"action": "accept", "src": ["*"], "dst": ["*:*"]}}]}}"#,
            vpc = crate::VPC_SUBNET
        ),
    )
    .expect("writing the policy");
    t.admin(&["policy", "set", policy.to_str().expect("a UTF-8 path")])
        .expect_success();

    let key = t.admin_json(&["keys", "create", "--reusable", "--tag", CONNECTOR_TAG])["key"]
        .as_str()
        .expect("an auth key")
        .to_owned();
    let ns = t.add_bridge_namespace("ac", &format!("{CONNECTOR_ADDR}/24"));
    ns.ip(&["route", "add", APPS_RANGE, "via", internet::GATEWAY])
        .expect("the connector's uplink route");
    let ns_name = ns.name().to_owned();
    t.write_netns_file(
        &ns_name,
        "resolv.conf",
        &format!("nameserver {APPS_RESOLVER}\n"),
    );
    let node = t.write_extra_node(
        "connector",
        &key,
        format!("{CONNECTOR_ADDR}:41641")
            .parse()
            .expect("a socket address"),
        "cw0",
        false,
    );
    // The connector runs the node resolver too, which takes over its
    // resolv.conf: the connector must still ask the apps' resolver, not
    // itself through split DNS.
    rewrite_file(&node.config, |old| {
        format!(
            "{}\n[app_connector]\n{section}\n",
            old.replace("[node]\n", "[node]\ndns_resolver = true\n")
        )
    });
    t.start_extra_node(&node, &ns);
    let status = wait_until(WAIT, "the connector to answer DNS", || {
        let s = t.status_in(&ns, &node.state_dir)?;
        anyhow::ensure!(
            s["app_connector"]["serving"] == true,
            "{}",
            s["app_connector"]
        );
        Ok(s)
    });
    ConnectorSite {
        inet,
        hosts: hosts_file,
        dns,
        ns,
        node,
        status,
    }
}

/// Writes `name address` pairs as a hosts file for [`APPS_ZONE`].
fn write_hosts(path: &Path, hosts: &[(String, String)]) {
    let text: String = hosts
        .iter()
        .map(|(name, address)| format!("{address} {name}.{APPS_ZONE}\n"))
        .collect();
    std::fs::write(path, text).expect("writing the apps' hosts file");
}

/// The strings of a JSON array (empty for anything else).
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
