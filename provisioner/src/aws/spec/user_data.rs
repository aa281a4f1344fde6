//! The appliance config an instance boots with (EC2 user data).

use super::{CONTROL_PORT, CONTROL_STATE_DIR};
use crate::role::Role;

/// Where the recorder takes recordings: every address, port 80 (the port
/// Tailscale SSH assumes). The security group admits only WireGuard, so
/// only tailnet peers reach it, and the allow-list narrows those.
pub const RECORDER_LISTEN: &str = "0.0.0.0:80";
/// The recorder's web UI listener (`--recorder-ui`), reached the same way.
pub const RECORDER_WEB_LISTEN: &str = "0.0.0.0:8080";
/// The recorder's spool, on the root volume.
pub const RECORDER_SPOOL_DIR: &str = "/var/lib/causeway/recorder/spool";
/// The key prefix of recordings in the bucket.
pub const RECORDINGS_PREFIX: &str = "recordings";
/// Who may send recordings unless `--recorder-allow` says otherwise: the
/// tailnet's IPv4 range, the addresses SSH servers send from.
pub const DEFAULT_RECORDER_ALLOW: &str = "100.64.0.0/10";

/// What an exit node advertises: the default routes, IPv4 and IPv6 (the
/// appliance's `[exit_node]` with `ipv6 = true`).
pub const EXIT_ROUTES: [&str; 2] = ["0.0.0.0/0", "::/0"];

/// The recorder's part of the config: its bucket and who may record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecorderData {
    /// The recordings bucket.
    pub bucket: String,
    /// The bucket's region.
    pub region: String,
    /// Source networks allowed to send recordings (and view them with the UI).
    pub allow: Vec<String>,
    /// The web UI is on.
    pub ui: bool,
}

/// The app connector's part of the config: its domains and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorData {
    /// The domains it routes (`app.example.com`, `*.example.com`).
    pub domains: Vec<String>,
    /// Most addresses held (`None`: the appliance's default).
    pub max_routes: Option<usize>,
    /// Shortest life of a learned route in seconds (`None`: the
    /// appliance's default).
    pub route_ttl_floor: Option<u64>,
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
    /// The Secrets Manager endpoint the secret is read from (a VPC
    /// interface endpoint or a FIPS endpoint); `None`: the region's.
    pub secrets_manager_endpoint: Option<String>,
    /// Role control: the ID of its EBS state volume, which the image
    /// mounts as the state directory.
    pub state_volume: Option<String>,
    /// Advertised routes.
    pub routes: Vec<String>,
    /// Role via6: the site ID every route is advertised under.
    pub site_id: Option<u16>,
    /// Masquerade tailnet sources.
    pub snat: bool,
    /// The VPC route tables whose tailnet route the HA primary points at
    /// itself (SNAT off; empty otherwise).
    pub aws_route_tables: Vec<String>,
    /// The recorder's bucket and allow-list (role recorder).
    pub recorder: Option<RecorderData>,
    /// Exit node with `--egress-subnet`: the MAC address of the second
    /// interface forwarded internet traffic leaves through.
    pub egress_mac: Option<String>,
    /// The app connector's domains and limits (role app-connector).
    pub app_connector: Option<ConnectorData>,
}

fn q(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// The appliance's TOML config for user data: control URL and key, the
/// auth key's secret ARN, routes, the recorder's bucket, the app
/// connector's domains. Never the key itself. Fails for a role whose config
/// cannot be complete: a role the appliance cannot run, a recorder without
/// its bucket, an app connector without domains.
pub fn user_data(c: &ApplianceConfig) -> anyhow::Result<String> {
    if let Some(why) = c.role.not_built_yet() {
        anyhow::bail!("role {}: not built yet: {why}", c.role);
    }
    let mut out = String::new();
    out.push_str(&format!(
        "# Causeway appliance config, role {} (written by provisioner; no secrets)\n",
        c.role
    ));
    if c.role == Role::Control {
        // Control's database and keys live on its state volume, which the
        // image mounts as the state directory before the appliance starts;
        // the volume outlives the instance.
        let Some(volume) = &c.state_volume else {
            anyhow::bail!("role control: the user data needs the state volume's ID");
        };
        out.push_str(&format!("state_dir = {}\n", q(CONTROL_STATE_DIR)));
        out.push_str(&format!("state_volume = {}\n", q(volume)));
        out.push_str(&format!(
            "\n[control]\nlisten = \"0.0.0.0:{CONTROL_PORT}\"\nadmin_listen = \"127.0.0.1:8081\"\n"
        ));
        return Ok(out);
    }
    out.push_str("state_dir = \"/var/lib/causeway\"\n");
    out.push_str("\n[node]\n");
    out.push_str(&format!("control_url = {}\n", q(&c.control_url)));
    out.push_str(&format!(
        "control_public_key = {}\n",
        q(&c.control_public_key)
    ));
    if let Some(arn) = &c.auth_key_secret {
        out.push_str(&format!("auth_key_secret = {}\n", q(arn)));
        if let Some(url) = &c.secrets_manager_endpoint {
            out.push_str(&format!("secrets_manager_endpoint = {}\n", q(url)));
        }
    }
    // The public IPv4 is on no interface: the appliance reads it from IMDSv2.
    out.push_str("cloud = \"aws\"\n");
    if c.egress_mac.is_some() && !c.role.takes_egress_subnet() {
        anyhow::bail!("role {}: an egress interface is for an exit node", c.role);
    }
    match c.role {
        Role::SubnetRouter | Role::Via6 => {
            // A 4via6 router is a subnet router whose routes carry its
            // site ID: the appliance advertises each as the site's IPv6
            // route in the tailnet's range and translates.
            let site = match (c.role, c.site_id) {
                (Role::Via6, Some(site)) => format!(", site_id = {site}"),
                (Role::Via6, None) => {
                    anyhow::bail!("role via6: the user data needs the site ID")
                }
                (_, Some(_)) => anyhow::bail!("role {}: a site ID is for role via6", c.role),
                (_, None) => String::new(),
            };
            out.push_str("\n[subnet_router]\nroutes = [\n");
            for r in &c.routes {
                out.push_str(&format!(
                    "  {{ prefix = {}, snat = {}{site} }},\n",
                    q(r),
                    c.snat
                ));
            }
            out.push_str("]\n");
            if !c.aws_route_tables.is_empty() {
                out.push_str(&format!(
                    "aws_route_tables = {}\n",
                    list(&c.aws_route_tables)
                ));
            }
        }
        Role::ExitNode => {
            // The appliance advertises 0.0.0.0/0 and ::/0 itself and
            // masquerades to its uplink, or to the egress interface.
            out.push_str("\n[exit_node]\nipv6 = true\n");
            if let Some(mac) = &c.egress_mac {
                out.push_str(&format!("egress_mac = {}\n", q(mac)));
            }
        }
        Role::AppConnector => {
            // The appliance learns its routes from the answers for these
            // domains and masquerades what it forwards to its uplink.
            let Some(a) = c.app_connector.as_ref().filter(|a| !a.domains.is_empty()) else {
                anyhow::bail!("role app-connector: the user data needs at least one domain");
            };
            out.push_str(&format!(
                "\n[app_connector]\ndomains = {}\n",
                list(&a.domains)
            ));
            if let Some(n) = a.max_routes {
                out.push_str(&format!("max_routes = {n}\n"));
            }
            if let Some(secs) = a.route_ttl_floor {
                out.push_str(&format!("route_ttl_floor = \"{secs}s\"\n"));
            }
        }
        Role::Recorder | Role::Control | Role::Relay => {}
    }
    if c.role == Role::Recorder {
        let Some(r) = &c.recorder else {
            anyhow::bail!("role recorder: the user data needs the recordings bucket");
        };
        out.push_str(&format!(
            "\n[recorder]\nlisten = {}\nallow = {}\nspool_dir = {}\n",
            q(RECORDER_LISTEN),
            list(&r.allow),
            q(RECORDER_SPOOL_DIR)
        ));
        out.push_str(&format!(
            "\n[recorder.storage]\nkind = \"s3\"\nbucket = {}\nprefix = {}\nregion = {}\n",
            q(&r.bucket),
            q(RECORDINGS_PREFIX),
            q(&r.region)
        ));
        if r.ui {
            out.push_str(&format!(
                "\n[recorder.web]\nlisten = {}\nallow = {}\n",
                q(RECORDER_WEB_LISTEN),
                list(&r.allow)
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(role: Role) -> ApplianceConfig {
        ApplianceConfig {
            role,
            control_url: "https://control.example:8080".into(),
            control_public_key: "AAAA=".into(),
            auth_key_secret: None,
            secrets_manager_endpoint: None,
            state_volume: (role == Role::Control).then(|| "vol-0123456789abcdef0".into()),
            routes: vec!["10.0.0.0/16".into()],
            site_id: None,
            snat: true,
            aws_route_tables: vec![],
            recorder: None,
            egress_mac: None,
            app_connector: None,
        }
    }

    #[test]
    fn a_via6_router_writes_its_site_id_on_every_route() {
        let text = user_data(&ApplianceConfig {
            routes: vec!["10.0.0.0/16".into(), "10.1.0.0/24".into()],
            site_id: Some(7),
            ..config(Role::Via6)
        })
        .expect("a via6 router's config");
        let v: toml::Value = toml::from_str(&text).expect("valid TOML");
        let routes = v["subnet_router"]["routes"].as_array().expect("a list");
        let got: Vec<(&str, Option<i64>, Option<bool>)> = routes
            .iter()
            .map(|r| {
                (
                    r["prefix"].as_str().unwrap_or_default(),
                    r.get("site_id").and_then(toml::Value::as_integer),
                    r.get("snat").and_then(toml::Value::as_bool),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.0/16", Some(7), Some(true)),
                ("10.1.0.0/24", Some(7), Some(true))
            ]
        );
        assert!(
            text.starts_with("# Causeway appliance config, role via6"),
            "{text}"
        );

        let err = user_data(&config(Role::Via6)).expect_err("no site ID");
        assert!(err.to_string().contains("needs the site ID"), "{err}");
        let err = user_data(&ApplianceConfig {
            site_id: Some(7),
            ..config(Role::SubnetRouter)
        })
        .expect_err("a site ID on a plain subnet router");
        assert!(
            err.to_string().contains("a site ID is for role via6"),
            "{err}"
        );
        let plain = user_data(&config(Role::SubnetRouter)).expect("plain router");
        assert!(!plain.contains("site_id"), "{plain}");
    }

    fn recorder(ui: bool) -> RecorderData {
        RecorderData {
            bucket: "causeway-prod-recordings-123456789012".into(),
            region: "eu-west-1".into(),
            allow: vec!["100.64.0.0/10".into(), "fd7a:115c:a1e0::/48".into()],
            ui,
        }
    }

    #[test]
    fn user_data_holds_the_secret_arn_and_routes_and_parses_as_toml() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:causeway/prod/subnet-router-authkey-AbCdEf";
        let text = user_data(&ApplianceConfig {
            auth_key_secret: Some(arn.into()),
            routes: vec!["10.0.0.0/16".into(), "10.1.0.0/16".into()],
            snat: false,
            ..config(Role::SubnetRouter)
        })
        .expect("a subnet router's config");
        let v: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert_eq!(v["node"]["auth_key_secret"].as_str(), Some(arn));
        assert_eq!(v["node"]["cloud"].as_str(), Some("aws"));
        let routes = v["subnet_router"]["routes"].as_array().expect("routes");
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[1]["prefix"].as_str(), Some("10.1.0.0/16"));
        assert_eq!(routes[0]["snat"].as_bool(), Some(false));
        assert!(!text.contains("auth_key_file"));
        assert!(
            v["subnet_router"].get("aws_route_tables").is_none(),
            "{text}"
        );
        assert!(!text.contains("secrets_manager_endpoint"), "{text}");

        let url = "https://vpce-0abc.secretsmanager.us-east-1.vpce.amazonaws.com";
        let text = user_data(&ApplianceConfig {
            auth_key_secret: Some(arn.into()),
            secrets_manager_endpoint: Some(url.into()),
            ..config(Role::SubnetRouter)
        })
        .expect("a subnet router's config");
        let v: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert_eq!(v["node"]["secrets_manager_endpoint"].as_str(), Some(url));
    }

    #[test]
    fn without_snat_the_router_is_told_its_vpc_route_tables() {
        let text = user_data(&ApplianceConfig {
            snat: false,
            aws_route_tables: vec!["rtb-0aaaaaaaaaaaaaaaa".into(), "rtb-12345678".into()],
            ..config(Role::SubnetRouter)
        })
        .expect("a subnet router's config");
        let v: toml::Value = toml::from_str(&text).expect("valid TOML");
        let tables: Vec<&str> = v["subnet_router"]["aws_route_tables"]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(toml::Value::as_str)
            .collect();
        assert_eq!(tables, ["rtb-0aaaaaaaaaaaaaaaa", "rtb-12345678"]);
        assert_eq!(v["node"]["cloud"].as_str(), Some("aws"));
    }

    #[test]
    fn an_exit_node_gets_an_exit_node_section_and_its_egress_mac() {
        let text = user_data(&config(Role::ExitNode)).expect("an exit node's config");
        let v: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert!(v.get("subnet_router").is_none(), "{text}");
        assert_eq!(v["exit_node"]["ipv6"].as_bool(), Some(true), "{text}");
        assert!(v["exit_node"].get("egress_mac").is_none(), "{text}");
        assert_eq!(v["node"]["cloud"].as_str(), Some("aws"));

        let text = user_data(&ApplianceConfig {
            egress_mac: Some("0a:1b:2c:3d:4e:5f".into()),
            ..config(Role::ExitNode)
        })
        .expect("an exit node with an egress interface");
        let v: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert_eq!(
            v["exit_node"]["egress_mac"].as_str(),
            Some("0a:1b:2c:3d:4e:5f")
        );
        let err = user_data(&ApplianceConfig {
            egress_mac: Some("0a:1b:2c:3d:4e:5f".into()),
            ..config(Role::SubnetRouter)
        })
        .expect_err("a router has no egress interface");
        assert!(err.to_string().contains("egress interface"), "{err}");
    }

    #[test]
    fn an_app_connector_gets_its_domains_and_limits_and_no_routes() {
        let connector = |max_routes, route_ttl_floor| ApplianceConfig {
            routes: vec![],
            app_connector: Some(ConnectorData {
                domains: vec!["app.example.com".into(), "*.example.net".into()],
                max_routes,
                route_ttl_floor,
            }),
            ..config(Role::AppConnector)
        };
        let text = user_data(&connector(None, None)).expect("a connector's config");
        let v: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert!(v.get("subnet_router").is_none(), "{text}");
        assert!(v.get("exit_node").is_none(), "{text}");
        let domains: Vec<&str> = v["app_connector"]["domains"]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(toml::Value::as_str)
            .collect();
        assert_eq!(domains, ["app.example.com", "*.example.net"]);
        assert!(v["app_connector"].get("max_routes").is_none(), "{text}");
        assert!(
            v["app_connector"].get("route_ttl_floor").is_none(),
            "{text}"
        );
        assert_eq!(v["node"]["cloud"].as_str(), Some("aws"));

        let text = user_data(&connector(Some(5000), Some(3600))).expect("with limits");
        let v: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert_eq!(v["app_connector"]["max_routes"].as_integer(), Some(5000));
        assert_eq!(
            v["app_connector"]["route_ttl_floor"].as_str(),
            Some("3600s")
        );

        for missing in [
            None,
            Some(ConnectorData {
                domains: vec![],
                max_routes: None,
                route_ttl_floor: None,
            }),
        ] {
            let err = user_data(&ApplianceConfig {
                app_connector: missing,
                ..config(Role::AppConnector)
            })
            .expect_err("no domains");
            assert!(err.to_string().contains("at least one domain"), "{err}");
        }
        let err = user_data(&ApplianceConfig {
            egress_mac: Some("0a:1b:2c:3d:4e:5f".into()),
            ..connector(None, None)
        })
        .expect_err("no egress interface for a connector");
        assert!(err.to_string().contains("egress interface"), "{err}");
    }

    #[test]
    fn a_recorder_gets_its_bucket_and_allow_list_and_no_routes() {
        let text = user_data(&ApplianceConfig {
            recorder: Some(recorder(false)),
            ..config(Role::Recorder)
        })
        .expect("a recorder's config");
        let v: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert!(v.get("subnet_router").is_none(), "{text}");
        assert_eq!(
            v["node"]["control_url"].as_str(),
            Some("https://control.example:8080")
        );
        let r = &v["recorder"];
        assert_eq!(r["listen"].as_str(), Some("0.0.0.0:80"));
        let allow: Vec<&str> = r["allow"]
            .as_array()
            .expect("allow")
            .iter()
            .filter_map(toml::Value::as_str)
            .collect();
        assert_eq!(allow, ["100.64.0.0/10", "fd7a:115c:a1e0::/48"]);
        let s = &r["storage"];
        assert_eq!(
            (
                s["kind"].as_str(),
                s["bucket"].as_str(),
                s["prefix"].as_str(),
                s["region"].as_str()
            ),
            (
                Some("s3"),
                Some("causeway-prod-recordings-123456789012"),
                Some("recordings"),
                Some("eu-west-1")
            )
        );
        assert!(r.get("web").is_none(), "no UI unless asked: {text}");

        let with_ui = user_data(&ApplianceConfig {
            recorder: Some(recorder(true)),
            ..config(Role::Recorder)
        })
        .expect("a recorder with its UI");
        let v: toml::Value = toml::from_str(&with_ui).expect("valid TOML");
        assert_eq!(
            v["recorder"]["web"]["listen"].as_str(),
            Some("0.0.0.0:8080")
        );
    }

    #[test]
    fn control_gets_no_node_and_an_incomplete_or_unbuilt_role_is_refused() {
        let text = user_data(&config(Role::Control)).expect("control's config");
        assert!(
            text.contains("[control]") && !text.contains("[node]"),
            "{text}"
        );
        let v: toml::Value = toml::from_str(&text).expect("valid TOML");
        assert_eq!(v["state_dir"].as_str(), Some("/var/lib/causeway"));
        assert_eq!(v["state_volume"].as_str(), Some("vol-0123456789abcdef0"));
        let mut no_volume = config(Role::Control);
        no_volume.state_volume = None;
        let err = user_data(&no_volume).expect_err("no volume");
        assert!(err.to_string().contains("state volume's ID"), "{err}");
        let err = user_data(&config(Role::Recorder)).expect_err("no bucket");
        assert!(err.to_string().contains("recordings bucket"), "{err}");
        for role in Role::not_built() {
            let err = user_data(&config(role)).expect_err("not built");
            assert!(err.to_string().contains("not built yet"), "{err}");
        }
    }
}
