//! The appliance config an instance boots with (EC2 user data).

use super::CONTROL_PORT;
use crate::role::Role;

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
    // The public IPv4 is on no interface: the appliance reads it from IMDSv2.
    out.push_str("cloud = \"aws\"\n");
    if c.role.advertises_routes() {
        out.push_str("\n[subnet_router]\nroutes = [\n");
        for r in &c.routes {
            out.push_str(&format!("  {{ prefix = {}, snat = {} }},\n", q(r), c.snat));
        }
        out.push_str("]\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(v["node"]["cloud"].as_str(), Some("aws"));
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
}
