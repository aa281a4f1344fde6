//! The admin HTTP API's request and response bodies (serde only), shared by
//! control's server, the `appliance admin` client, the provisioner and the
//! fuzz targets, so the two ends cannot drift apart. The endpoints are
//! documented in docs/reference/admin-api.md.
//!
//! Requests refuse unknown fields (a typo is an error, not a silent
//! default); responses accept them and default missing ones, so a client
//! and a control of different versions still read each other.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{NodeId, UnixTime};

/// `POST /api/v1/keys`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyRequest {
    /// The key may register more than one node.
    #[serde(default)]
    pub reusable: bool,
    /// Nodes registered with it are removed when they go offline.
    #[serde(default)]
    pub ephemeral: bool,
    /// Tags the nodes get (`tag:NAME`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Lifetime of the key; control's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_seconds: Option<u64>,
    /// The user owning nodes registered with it (`name@domain`); none when
    /// absent. A tagged node is known by its tags, not its user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// An auth key as listed (`GET /api/v1/keys`); never the secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyView {
    /// Public id (the secret's prefix).
    pub id: String,
    /// See [`CreateKeyRequest::reusable`].
    pub reusable: bool,
    /// See [`CreateKeyRequest::ephemeral`].
    pub ephemeral: bool,
    /// See [`CreateKeyRequest::tags`].
    pub tags: Vec<String>,
    /// See [`CreateKeyRequest::user`].
    pub user: Option<String>,
    /// When it was made.
    pub created: UnixTime,
    /// When it stops working.
    pub expires: Option<UnixTime>,
    /// An admin revoked it.
    pub revoked: bool,
    /// It has registered a node.
    pub used: bool,
    /// It would register a node now.
    pub usable: bool,
}

/// The answer to [`CreateKeyRequest`]: the key's view and, this once, the
/// secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CreatedKey {
    /// What `GET /api/v1/keys` will show of it.
    #[serde(flatten)]
    pub view: KeyView,
    /// The secret a node registers with.
    pub key: String,
}

/// A node as `GET /api/v1/nodes` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeView {
    /// Control's id.
    pub id: NodeId,
    /// Tailnet name (unique).
    pub name: String,
    /// The host name it registered with.
    pub hostname: String,
    /// WireGuard public key (base64).
    pub node_key: String,
    /// Machine key (base64); none for WireGuard-only devices.
    pub machine_key: Option<String>,
    /// Tailnet addresses (`100.64.0.5/32`, `fd7a:…/128`).
    pub addresses: Vec<IpNet>,
    /// Its tags.
    pub tags: Vec<String>,
    /// The user owning it (`name@domain`), from its auth key or given when
    /// an admin added it; none for nodes without one.
    pub user: Option<String>,
    /// Removed when it goes offline.
    pub ephemeral: bool,
    /// A plain WireGuard peer, added by an admin.
    pub wireguard_only: bool,
    /// Connected to control, on its netmap stream.
    pub online: bool,
    /// When its node key expires.
    pub key_expiry: Option<UnixTime>,
    /// Its node key has expired.
    pub expired: bool,
    /// When control last heard from it.
    pub last_seen: Option<UnixTime>,
    /// Addresses it may be reached on.
    pub endpoints: Vec<SocketAddr>,
    /// Routes it advertises.
    pub advertised_routes: Vec<IpNet>,
    /// Routes control approved for it.
    pub approved_routes: Vec<IpNet>,
    /// Approved routes it is the primary for.
    pub primary_routes: Vec<IpNet>,
    /// Approved routes it could carry (online, not expired) while another
    /// router is primary.
    pub standby_routes: Vec<IpNet>,
    /// Advertised routes its health probes report it cannot forward to.
    pub unhealthy_routes: Vec<IpNet>,
    /// The priority it reported (higher takes a free route first); none
    /// until it reports one.
    pub priority: Option<u32>,
    /// Per advertised route: health, why, and how control ranks it.
    pub route_health: Vec<RouteHealthView>,
}

/// One advertised route of a router, as its health probes and control's
/// primary selection see it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteHealthView {
    /// The prefix.
    pub prefix: IpNet,
    /// Whether the router reports it can forward to it (a router that
    /// reports nothing counts as healthy).
    pub healthy: bool,
    /// The router's reason, when unhealthy.
    pub reason: String,
    /// `eligible`, `hold_down` (healthy, but back too recently to take the
    /// route) or `unhealthy` while the router is a candidate for the
    /// route; none otherwise (offline, not approved, expired).
    pub standing: Option<String>,
    /// Whether it is the route's primary.
    pub primary: bool,
}

/// The answer to `DELETE /api/v1/nodes/ID`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeletedNode {
    /// The node removed.
    pub deleted: NodeId,
}

/// A router's routes, as `GET /api/v1/routes` and route approval show them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RouteView {
    /// The node.
    pub node: NodeId,
    /// Its name.
    pub name: String,
    /// Connected to control.
    pub online: bool,
    /// Routes it advertises.
    pub advertised: Vec<IpNet>,
    /// Routes approved for it.
    pub approved: Vec<IpNet>,
    /// Routes it is primary for.
    pub primary: Vec<IpNet>,
    /// See [`NodeView::standby_routes`].
    pub standby: Vec<IpNet>,
    /// See [`NodeView::unhealthy_routes`].
    pub unhealthy: Vec<IpNet>,
    /// See [`NodeView::priority`].
    pub priority: Option<u32>,
    /// See [`NodeView::route_health`].
    pub health: Vec<RouteHealthView>,
}

/// `POST /api/v1/routes/approve` and `…/unapprove`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRequest {
    /// Node id or name.
    pub node: String,
    /// The prefix, in CIDR notation.
    pub prefix: String,
}

/// `PUT /api/v1/dns/split/DOMAIN`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitDnsRequest {
    /// Resolver addresses, as text (checked by control).
    pub resolvers: Vec<String>,
}

/// The answer to [`SplitDnsRequest`]: the entry as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SplitDnsEntry {
    /// The domain, normalised.
    pub domain: String,
    /// Its resolvers.
    pub resolvers: Vec<IpAddr>,
}

/// `POST /api/v1/wireguard-devices`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddDeviceRequest {
    /// The device's name.
    pub name: String,
    /// The user owning it (`name@domain`); none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// The answer to [`AddDeviceRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AddedDevice {
    /// The new node.
    pub node: NodeView,
    /// Its wg-quick config, private key included (shown once, never stored).
    pub config: String,
}

/// The answer to a change with nothing else to say.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Done {
    /// Always `true`.
    pub ok: bool,
}

/// The body of every error answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    /// What went wrong, naming the input.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_refuse_unknown_fields_and_name_them() {
        let e = serde_json::from_str::<CreateKeyRequest>(r#"{"reuseable": true}"#)
            .expect_err("refused");
        assert!(e.to_string().contains("reuseable"), "{e}");
        let e = serde_json::from_str::<RouteRequest>(
            r#"{"node": "a", "prefix": "10.0.0.0/8", "x": 1}"#,
        )
        .expect_err("refused");
        assert!(e.to_string().contains("`x`"), "{e}");
    }

    #[test]
    fn user_is_optional_in_requests_and_absent_when_unset() {
        let req: CreateKeyRequest = serde_json::from_str(r#"{"tags": ["tag:r"]}"#).expect("parses");
        assert_eq!(req.user, None);
        assert_eq!(
            serde_json::to_value(&req).expect("serialises"),
            serde_json::json!({"reusable": false, "ephemeral": false, "tags": ["tag:r"]})
        );
        let req: AddDeviceRequest =
            serde_json::from_str(r#"{"name": "printer", "user": "alice@example.com"}"#)
                .expect("parses");
        assert_eq!(req.user.as_deref(), Some("alice@example.com"));
        // An older control's answer has no user: it reads as none.
        let view: KeyView = serde_json::from_str(r#"{"id": "k1"}"#).expect("parses");
        assert_eq!(view.user, None);
    }

    #[test]
    fn a_created_key_is_its_view_plus_the_secret_in_one_object() {
        let created = CreatedKey {
            view: KeyView {
                id: "k1".into(),
                tags: vec!["tag:r".into()],
                ..KeyView::default()
            },
            key: "secret".into(),
        };
        let json = serde_json::to_value(&created).expect("encodes");
        assert_eq!(json["id"], "k1");
        assert_eq!(json["key"], "secret");
        assert_eq!(
            serde_json::from_value::<CreatedKey>(json).expect("decodes"),
            created
        );
    }

    #[test]
    fn responses_accept_fields_a_newer_control_adds() {
        let node: NodeView = serde_json::from_value(serde_json::json!({
            "id": 3, "name": "r", "hostname": "r", "node_key": "k", "machine_key": null,
            "addresses": ["100.64.0.3/32"], "tags": [], "ephemeral": false,
            "wireguard_only": false, "online": true, "key_expiry": null, "expired": false,
            "last_seen": 5, "endpoints": [], "advertised_routes": ["198.19.1.0/24"],
            "approved_routes": [], "primary_routes": [], "user": "alice@example.com",
            "posture": {"os": "linux"}
        }))
        .expect("parses");
        assert_eq!(node.id, NodeId(3));
        assert_eq!(node.user.as_deref(), Some("alice@example.com"));
        assert_eq!(
            node.advertised_routes,
            vec!["198.19.1.0/24".parse::<IpNet>().expect("prefix")]
        );
    }
}
