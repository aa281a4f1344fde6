//! The `[control]` section of the appliance config.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use causeway_wire::liveness::{MAX_KEEPALIVE_MS, MIN_KEEPALIVE_MS};
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
    /// Keepalive interval of a map stream (default `15s`): each end sends a
    /// keepalive after this long without sending, and closes the stream
    /// after two intervals and a 250 ms grace without receiving (nodes of
    /// capability version 1 send none and get no read deadline).
    #[serde(default = "default_keepalive", with = "serde_text")]
    pub keepalive_interval: Duration,
    /// Keepalive interval for nodes that serve approved routes (HA
    /// candidates), so a silent router is noticed and replaced within two
    /// intervals and the grace (default `1s`, about 2.25 s).
    #[serde(default = "default_router_keepalive", with = "serde_text")]
    pub router_keepalive_interval: Duration,
    /// How long an ephemeral node may be gone before it is deleted
    /// (default `30s`).
    #[serde(default = "default_ephemeral_grace", with = "serde_text")]
    pub ephemeral_grace: Duration,
    /// How long a client on `listen` may take to send its HTTP request
    /// head, and then each message before its map stream opens (default
    /// `10s`); past it the connection is closed.
    #[serde(default = "default_handshake_timeout", with = "serde_text")]
    pub handshake_timeout: Duration,
    /// How long a subnet router that was unhealthy or offline must stay
    /// healthy and online before it may take a route again (default `10s`,
    /// whole seconds): a router whose health flaps faster than this never
    /// takes a route back.
    #[serde(default = "default_route_hold_down", with = "serde_text")]
    pub route_hold_down: Duration,
    /// Connections open at once on `listen`, in total (default 10000);
    /// past it new connections are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once on `listen` from one IPv4 address or one
    /// IPv6 /64 (default 256: nodes behind one NAT share an address).
    #[serde(default = "default_max_connections_per_source")]
    pub max_connections_per_source: usize,
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
            router_keepalive_interval: default_router_keepalive(),
            ephemeral_grace: default_ephemeral_grace(),
            handshake_timeout: default_handshake_timeout(),
            route_hold_down: default_route_hold_down(),
            max_connections: default_max_connections(),
            max_connections_per_source: default_max_connections_per_source(),
        }
    }
}

impl ControlConfig {
    /// Refuses limits that would make control serve nobody.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.max_connections == 0 {
            anyhow::bail!("control.max_connections = 0: expected at least 1");
        }
        if self.max_connections_per_source == 0 {
            anyhow::bail!("control.max_connections_per_source = 0: expected at least 1");
        }
        for (name, interval) in [
            ("keepalive_interval", self.keepalive_interval),
            ("router_keepalive_interval", self.router_keepalive_interval),
        ] {
            let ms = interval.as_millis();
            if ms < u128::from(MIN_KEEPALIVE_MS) || ms > u128::from(MAX_KEEPALIVE_MS) {
                anyhow::bail!(
                    "control.{name} = {ms}ms: expected {MIN_KEEPALIVE_MS}ms to {}h",
                    MAX_KEEPALIVE_MS / 3_600_000
                );
            }
        }
        if self.route_hold_down > MAX_ROUTE_HOLD_DOWN || self.route_hold_down.subsec_nanos() != 0 {
            anyhow::bail!(
                "control.route_hold_down = {:?}: expected whole seconds, at most {}s",
                self.route_hold_down,
                MAX_ROUTE_HOLD_DOWN.as_secs()
            );
        }
        if self.handshake_timeout.is_zero() {
            anyhow::bail!("control.handshake_timeout = 0s: expected a positive duration");
        }
        Ok(())
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

fn default_router_keepalive() -> Duration {
    Duration::from_secs(1)
}

fn default_ephemeral_grace() -> Duration {
    Duration::from_secs(30)
}

/// The longest hold-down accepted: past an hour a failed-over route would
/// effectively never come back to a repaired router.
const MAX_ROUTE_HOLD_DOWN: Duration = Duration::from_secs(3600);

fn default_route_hold_down() -> Duration {
    Duration::from_secs(u64::try_from(causeway_tailnet::DEFAULT_ROUTE_HOLD_DOWN).unwrap_or(10))
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_connections() -> usize {
    10_000
}

fn default_max_connections_per_source() -> usize {
    256
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
        assert_eq!(config.router_keepalive_interval, Duration::from_secs(1));
        assert_eq!(config.stun_port, 3478);
        assert_eq!(config.handshake_timeout, Duration::from_secs(10));
        assert_eq!(config.route_hold_down, Duration::from_secs(10));
        assert_eq!(config.max_connections, 10_000);
        assert_eq!(config.max_connections_per_source, 256);
        config.validate().expect("defaults are valid");
        assert_eq!(
            config.policy_file,
            Some(PathBuf::from("/etc/causeway/policy.hujson"))
        );
    }

    #[test]
    fn limits_that_serve_nobody_are_refused() {
        for (section, expected) in [
            ("max_connections = 0", "control.max_connections = 0"),
            (
                "max_connections_per_source = 0",
                "control.max_connections_per_source = 0",
            ),
            (
                "router_keepalive_interval = \"0s\"",
                "control.router_keepalive_interval = 0ms",
            ),
            (
                "keepalive_interval = \"400d\"",
                "control.keepalive_interval = 34560000000ms",
            ),
            (
                "handshake_timeout = \"0s\"",
                "control.handshake_timeout = 0s",
            ),
            (
                "route_hold_down = \"2h\"",
                "control.route_hold_down = 7200s: expected whole seconds, at most 3600s",
            ),
            (
                "route_hold_down = \"1500ms\"",
                "control.route_hold_down = 1.5s: expected whole seconds",
            ),
        ] {
            let config: ControlConfig = toml::from_str(section).expect("parses");
            let error = config.validate().expect_err(section).to_string();
            assert!(error.starts_with(expected), "{error}");
        }
    }
}
