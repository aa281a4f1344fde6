//! The `[control]` section of the appliance config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::duration::serde_text;

/// Configuration of the control role.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Where the database, keys and admin token live. Not part of the
    /// `[control]` section: the appliance fills it from its `state_dir`.
    #[serde(default)]
    pub state_dir: PathBuf,
    /// Node-facing listener (Noise IK over an HTTP upgrade).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Admin HTTP API listener.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// UDP port, on `listen`'s address, that answers STUN Binding requests
    /// so nodes learn the address their WireGuard socket has from outside
    /// (default 3478; 0 turns it off).
    #[serde(default = "default_stun_port")]
    pub stun_port: u16,
    /// huJSON policy loaded at start (replaces the stored policy).
    #[serde(default)]
    pub policy_file: Option<PathBuf>,
    /// Lifetime of a node key from registration (default `180d`).
    #[serde(default = "default_node_key_expiry", with = "serde_text")]
    pub node_key_expiry: Duration,
    /// Keepalive on an idle map stream (default `15s`).
    #[serde(default = "default_keepalive", with = "serde_text")]
    pub keepalive_interval: Duration,
    /// How long an ephemeral node may be gone before it is deleted
    /// (default `30s`).
    #[serde(default = "default_ephemeral_grace", with = "serde_text")]
    pub ephemeral_grace: Duration,
}

impl ControlConfig {
    /// The defaults, with the given state directory.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            stun_port: default_stun_port(),
            policy_file: None,
            node_key_expiry: default_node_key_expiry(),
            keepalive_interval: default_keepalive(),
            ephemeral_grace: default_ephemeral_grace(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}

fn default_stun_port() -> u16 {
    causeway_wire::stun::DEFAULT_PORT
}

fn default_node_key_expiry() -> Duration {
    Duration::from_secs(180 * 86_400)
}

fn default_keepalive() -> Duration {
    Duration::from_secs(15)
}

fn default_ephemeral_grace() -> Duration {
    Duration::from_secs(30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_section() {
        let config: ControlConfig = toml::from_str(
            r#"
            listen = "0.0.0.0:8080"
            admin_listen = "127.0.0.1:8081"
            policy_file = "/etc/causeway/policy.hujson"
            node_key_expiry = "90d"
            "#,
        )
        .expect("valid section");
        assert_eq!(config.node_key_expiry, Duration::from_secs(90 * 86_400));
        assert_eq!(config.keepalive_interval, Duration::from_secs(15));
        assert_eq!(config.stun_port, 3478);
        assert_eq!(
            config.policy_file,
            Some(PathBuf::from("/etc/causeway/policy.hujson"))
        );
    }
}
