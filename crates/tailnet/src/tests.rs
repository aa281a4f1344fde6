//! Scenario and property tests of the whole tailnet state.

use std::net::SocketAddr;

use causeway_wire::{
    MapRequest, MapResponse, NodeId, NodeUpdate, PublicKey, RegisterRequest, UnixTime,
};
use ipnet::IpNet;
use proptest::prelude::*;

use crate::addresses::ula_from_random;
use crate::auth_keys::{ID_BYTES, SECRET_BYTES};
use crate::*;

const LIFETIME: i64 = 180 * 86_400;
const T0: UnixTime = 1_700_000_000;

fn key(n: u8) -> PublicKey {
    PublicKey::from_bytes([n; 32])
}

fn net(s: &str) -> IpNet {
    s.parse().expect("valid prefix")
}

fn tailnet() -> TailnetState {
    TailnetState::new(TailnetInfo::new("test", ula_from_random([1, 2, 3, 4, 5])))
}

fn auth_key(state: &mut TailnetState, tags: &[&str], n: u8) -> String {
    let spec = AuthKeySpec {
        reusable: true,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..Default::default()
    };
    state
        .create_auth_key(&spec, [n; ID_BYTES], [n; SECRET_BYTES], T0)
        .expect("valid spec")
        .0
        .secret
}

/// Registers machine `n` (machine key n, node key n+100) and opens its stream.
fn join(state: &mut TailnetState, key_text: &str, n: u8, routes: &[&str]) -> (NodeId, SessionId) {
    let req = RegisterRequest {
        node_key: key(n + 100),
        old_node_key: None,
        auth_key: Some(key_text.to_owned()),
        hostname: format!("host{n}"),
    };
    state
        .register(key(n), &req, LIFETIME, T0)
        .expect("registers");
    let map = MapRequest {
        node_key: key(n + 100),
        hostname: format!("host{n}"),
        endpoints: vec![SocketAddr::from(([198, 18, 0, n], 41641))],
        advertised_routes: routes.iter().map(|r| net(r)).collect(),
        health: None,
        priority: None,
        app_connector: None,
    };
    let (id, session, _) = state.connect(key(n), &map, T0).expect("connects");
    (id, session)
}

fn peer(map: &MapResponse, id: NodeId) -> Option<&causeway_wire::Node> {
    map.peers
        .as_ref()
        .and_then(|p| p.iter().find(|n| n.id == id))
}

#[test]
fn nodes_get_sequential_addresses_and_unique_names() {
    let mut state = tailnet();
    let k = auth_key(&mut state, &[], 1);
    let (a, _) = join(&mut state, &k, 1, &[]);
    let req = RegisterRequest {
        node_key: key(150),
        old_node_key: None,
        auth_key: Some(k),
        hostname: "host1".into(),
    };
    let b = state
        .register(key(50), &req, LIFETIME, T0)
        .expect("registers")
        .node_id;
    let (a, b) = (state.node(a).expect("a"), state.node(b).expect("b"));
    assert_eq!(a.ipv4.to_string(), "100.64.0.1");
    assert_eq!(b.ipv4.to_string(), "100.64.0.2");
    assert_eq!(a.ipv6.to_string(), "fd01:203:405::6440:1");
    assert_eq!((a.name.as_str(), b.name.as_str()), ("host1", "host1-1"));
}

#[test]
fn unknown_machine_without_key_is_refused_and_nothing_changes() {
    let mut state = tailnet();
    let req = RegisterRequest {
        node_key: key(9),
        old_node_key: None,
        auth_key: None,
        hostname: "x".into(),
    };
    assert_eq!(
        state.register(key(1), &req, LIFETIME, T0),
        Err(RegisterError::AuthKeyRequired)
    );
    let req = RegisterRequest {
        auth_key: Some("cwk_nope".into()),
        ..req
    };
    assert_eq!(
        state.register(key(1), &req, LIFETIME, T0),
        Err(RegisterError::AuthKey(AuthKeyRefusal::Unknown))
    );
    assert_eq!(state.nodes().count(), 0);
}

#[test]
fn single_use_key_registers_once() {
    let mut state = tailnet();
    let spec = AuthKeySpec::default();
    let k = state
        .create_auth_key(&spec, [1; ID_BYTES], [1; SECRET_BYTES], T0)
        .expect("creates")
        .0
        .secret;
    join(&mut state, &k, 1, &[]);
    let req = RegisterRequest {
        node_key: key(102),
        old_node_key: None,
        auth_key: Some(k),
        hostname: "b".into(),
    };
    assert!(matches!(
        state.register(key(2), &req, LIFETIME, T0),
        Err(RegisterError::AuthKey(AuthKeyRefusal::AlreadyUsed { .. }))
    ));
}

#[test]
fn rotation_needs_the_old_key_and_no_auth_key() {
    let mut state = tailnet();
    let k = auth_key(&mut state, &[], 1);
    let (id, _) = join(&mut state, &k, 1, &[]);
    state.expire_node(id, T0 + 10).expect("exists");
    let stale = RegisterRequest {
        node_key: key(101),
        old_node_key: None,
        auth_key: None,
        hostname: "host1".into(),
    };
    assert_eq!(
        state.register(key(1), &stale, LIFETIME, T0 + 20),
        Err(RegisterError::NodeKeyExpired)
    );
    let rotate = RegisterRequest {
        node_key: key(201),
        old_node_key: Some(key(101)),
        ..stale
    };
    let reg = state
        .register(key(1), &rotate, LIFETIME, T0 + 20)
        .expect("rotates");
    assert_eq!(reg.node_id, id);
    assert_eq!(state.node(id).expect("node").node_key, key(201));
    assert_eq!(
        state.node(id).expect("node").key_expiry,
        Some(T0 + 20 + LIFETIME)
    );
}

#[test]
fn routes_need_approval_then_become_primary() {
    let mut state = tailnet();
    let k = auth_key(&mut state, &[], 1);
    let (router, _) = join(&mut state, &k, 1, &["198.19.1.0/24"]);
    let (client, _) = join(&mut state, &k, 2, &[]);
    let mut session = MapSession::new(client);
    let map = session.full_map(&state, T0);
    assert_eq!(peer(&map, router).expect("router").allowed_ips.len(), 2);

    assert!(matches!(
        state.approve_route(router, net("198.19.2.0/24"), T0),
        Err(AdminError::RouteNotAdvertised { .. })
    ));
    let changes = state
        .approve_route(router, net("198.19.1.0/24"), T0)
        .expect("approves");
    let DeltaOutcome::Send(delta) = session.delta(&PreparedChange::new(&state, &changes, T0))
    else {
        panic!("expected a delta")
    };
    assert_eq!(
        delta.peers_changed[0].primary_routes,
        vec![net("198.19.1.0/24")]
    );
    assert!(
        delta.peers_changed[0]
            .allowed_ips
            .contains(&net("198.19.1.0/24"))
    );
}

fn user_key(state: &mut TailnetState, user: &str, n: u8) -> String {
    let spec = AuthKeySpec {
        reusable: true,
        user: Some(user.to_owned()),
        ..Default::default()
    };
    state
        .create_auth_key(&spec, [n; ID_BYTES], [n; SECRET_BYTES], T0)
        .expect("valid spec")
        .0
        .secret
}

#[test]
fn keys_and_wireguard_devices_carry_their_user() {
    let mut state = tailnet();
    let k = user_key(&mut state, "alice@example.com", 1);
    let (a, _) = join(&mut state, &k, 1, &[]);
    assert_eq!(
        state.node(a).expect("a").user.as_deref(),
        Some("alice@example.com")
    );
    let (d, _) = state
        .add_wireguard_device_for("phone", key(77), Some("bob@example.com"), T0)
        .expect("valid user");
    assert_eq!(
        state.node(d).expect("d").user.as_deref(),
        Some("bob@example.com")
    );
    let (plain, _) = state
        .add_wireguard_device("printer", key(78), T0)
        .expect("no user");
    assert_eq!(state.node(plain).expect("plain").user, None);
    let bad = AuthKeySpec {
        user: Some("alice".into()),
        ..Default::default()
    };
    assert_eq!(
        state
            .create_auth_key(&bad, [9; ID_BYTES], [9; SECRET_BYTES], T0)
            .map(|_| ()),
        Err(AdminError::InvalidUser("alice".into()))
    );
    assert_eq!(
        state
            .add_wireguard_device_for("x", key(79), Some("no user"), T0)
            .map(|_| ()),
        Err(AdminError::InvalidUser("no user".into()))
    );
}

#[test]
fn group_approvers_approve_routes_of_their_members_untagged_nodes() {
    let mut state = tailnet();
    state
        .set_policy(
            r#"{"groups": {"group:net": ["alice@example.com"]},
                "autoApprovers": {"routes": {"198.19.1.0/24": ["group:net"]}}}"#,
            T0,
        )
        .expect("valid policy");
    let alice = user_key(&mut state, "alice@example.com", 1);
    let bob = user_key(&mut state, "bob@example.com", 2);
    let (a, _) = join(&mut state, &alice, 1, &["198.19.1.0/24"]);
    let (b, _) = join(&mut state, &bob, 2, &["198.19.1.0/24"]);
    assert!(
        state
            .node(a)
            .expect("a")
            .approved_routes
            .contains(&net("198.19.1.0/24"))
    );
    assert!(state.node(b).expect("b").approved_routes.is_empty());
}

#[test]
fn compiled_policy_reaches_the_router_for_its_approved_route() {
    let mut state = tailnet();
    state
        .set_policy(
            r#"{"groups": {"group:dba": ["alice@example.com"]},
                "tagOwners": {"tag:router": []},
                "autoApprovers": {"routes": {"198.19.1.0/24": ["tag:router"]}},
                "acls": [{"action": "accept", "src": ["group:dba"], "dst": ["198.19.1.0/24:5432"]}]}"#,
            T0,
        )
        .expect("valid policy");
    let router = auth_key(&mut state, &["tag:router"], 1);
    let alice = user_key(&mut state, "alice@example.com", 2);
    let bob = user_key(&mut state, "bob@example.com", 3);
    let (r, _) = join(&mut state, &router, 1, &["198.19.1.0/24"]);
    let (a, _) = join(&mut state, &alice, 2, &[]);
    let (b, _) = join(&mut state, &bob, 3, &[]);
    let compiled = state.compile_policy();
    let alice_node = state.node(a).expect("a");
    let rules = &compiled[&r].filter.rules;
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].sources, alice_node.addresses());
    assert_eq!(
        rules[0].destinations,
        vec![causeway_wire::FilterDestination {
            prefix: net("198.19.1.0/24"),
            ports: causeway_wire::PortRange {
                first: 5432,
                last: 5432
            },
        }]
    );
    assert_eq!(compiled[&r].peers, [a].into());
    assert_eq!(compiled[&a].peers, [r].into());
    assert!(compiled[&b].peers.is_empty() && compiled[&b].filter.rules.is_empty());
}

#[test]
fn auto_approvers_approve_tagged_routers() {
    let mut state = tailnet();
    state
        .set_policy(
            r#"{"autoApprovers": {"routes": {"198.19.0.0/16": ["tag:router"], "198.19.1.0/24": ["tag:router"]}}, "acls": []}"#,
            T0,
        )
        .expect("valid policy");
    let tagged = auth_key(&mut state, &["tag:router"], 1);
    let plain = auth_key(&mut state, &[], 2);
    // 198.19.3.0/24 lies inside the approved /16 but is not named: refused.
    let (a, _) = join(
        &mut state,
        &tagged,
        1,
        &["198.19.1.0/24", "10.0.0.0/8", "198.19.3.0/24"],
    );
    let (b, _) = join(&mut state, &plain, 2, &["198.19.2.0/24"]);
    assert_eq!(
        state
            .node(a)
            .expect("a")
            .approved_routes
            .iter()
            .collect::<Vec<_>>(),
        [&net("198.19.1.0/24")]
    );
    assert!(state.node(b).expect("b").approved_routes.is_empty());
}

/// A policy whose `autoApprovers` approve `tag:exit` exit nodes and that
/// lets everyone send to the internet.
fn allow_exit_nodes(state: &mut TailnetState) {
    state
        .set_policy(
            r#"{"autoApprovers": {"exitNode": ["tag:exit"]},
                "acls": [{"action": "accept", "src": ["*"], "dst": ["autogroup:internet:*"]}]}"#,
            T0,
        )
        .expect("valid policy");
}

#[test]
fn exit_routes_are_offered_to_every_peer_never_made_primary() {
    let mut state = tailnet();
    allow_exit_nodes(&mut state);
    let exit_key = auth_key(&mut state, &["tag:exit"], 1);
    let plain = auth_key(&mut state, &[], 2);
    let (exit, _) = join(&mut state, &exit_key, 1, &["0.0.0.0/0", "::/0"]);
    let (other, _) = join(&mut state, &plain, 2, &["0.0.0.0/0"]);
    let (client, _) = join(&mut state, &plain, 3, &[]);

    let map = MapSession::new(client).full_map(&state, T0);

    // autoApprovers.exitNode approved the tagged node's exit routes only.
    let offered = peer(&map, exit).expect("the exit node is visible");
    assert_eq!(offered.exit_routes, [net("0.0.0.0/0"), net("::/0")]);
    assert!(offered.primary_routes.is_empty());
    assert!(!offered.allowed_ips.iter().any(|p| p.prefix_len() == 0));
    assert!(peer(&map, other).is_none_or(|n| n.exit_routes.is_empty()));
    assert!(state.primary_routes(exit).is_empty());
    // An admin's approval makes the other node a second candidate, still
    // not a primary route.
    state
        .approve_route(other, net("0.0.0.0/0"), T0 + 1)
        .expect("advertised route");
    let map = MapSession::new(client).full_map(&state, T0 + 1);
    let second = peer(&map, other).expect("an exit node is visible to the client");
    assert_eq!(second.exit_routes, [net("0.0.0.0/0")]);
    assert!(state.primary_routes(other).is_empty());
    // The exit node's filter lets the client's traffic to the internet in.
    let exit_map = MapSession::new(exit).full_map(&state, T0 + 1);
    let filter = exit_map.packet_filter.expect("a filter");
    assert!(
        filter.rules[0]
            .destinations
            .iter()
            .any(|d| d.prefix.contains(
                &"198.18.0.1"
                    .parse::<std::net::IpAddr>()
                    .expect("an address")
            )),
        "{filter:?}"
    );
}

#[test]
fn failover_moves_the_primary_and_sticks() {
    let mut state = tailnet();
    state
        .set_policy(
            r#"{"autoApprovers": {"routes": {"198.19.1.0/24": ["tag:r"]}}}"#,
            T0,
        )
        .expect("valid");
    let k = auth_key(&mut state, &["tag:r"], 1);
    let (a, sa) = join(&mut state, &k, 1, &["198.19.1.0/24"]);
    let (b, sb) = join(&mut state, &k, 2, &["198.19.1.0/24"]);
    let p = net("198.19.1.0/24");
    assert_eq!(state.primaries().get(&p), Some(&a));
    let changes = state.disconnect(a, sa, T0 + 1);
    assert!(changes.nodes.contains(&a) && changes.nodes.contains(&b));
    assert_eq!(state.primaries().get(&p), Some(&b));
    // a comes back: b keeps the route.
    let map = MapRequest {
        node_key: key(101),
        hostname: "host1".into(),
        endpoints: vec![],
        advertised_routes: vec![p],
        health: None,
        priority: None,
        app_connector: None,
    };
    state.connect(key(1), &map, T0 + 2).expect("reconnects");
    assert_eq!(state.primaries().get(&p), Some(&b));
    state.disconnect(b, sb, T0 + 3);
    assert_eq!(state.primaries().get(&p), Some(&a));
}

#[test]
fn stale_session_close_does_not_mark_offline() {
    let mut state = tailnet();
    let k = auth_key(&mut state, &[], 1);
    let (a, old) = join(&mut state, &k, 1, &[]);
    let map = MapRequest {
        node_key: key(101),
        hostname: "host1".into(),
        endpoints: vec![],
        advertised_routes: vec![],
        health: None,
        priority: None,
        app_connector: None,
    };
    state.connect(key(1), &map, T0).expect("reconnects");
    assert!(state.disconnect(a, old, T0).is_empty());
    assert!(state.is_online(a));
}

#[test]
fn ephemeral_nodes_go_after_idle_check() {
    let mut state = tailnet();
    let spec = AuthKeySpec {
        ephemeral: true,
        reusable: true,
        ..Default::default()
    };
    let k = state
        .create_auth_key(&spec, [1; ID_BYTES], [1; SECRET_BYTES], T0)
        .expect("creates")
        .0
        .secret;
    let (a, s) = join(&mut state, &k, 1, &[]);
    state.disconnect(a, s, T0);
    assert!(
        state.remove_ephemeral_if_idle(a, None, T0).is_empty(),
        "a newer stream closed since"
    );
    let changes = state.remove_ephemeral_if_idle(a, Some(s), T0);
    assert!(changes.nodes.contains(&a));
    assert!(state.node(a).is_none());
}

#[test]
fn endpoint_only_change_is_a_patch() {
    let mut state = tailnet();
    let k = auth_key(&mut state, &[], 1);
    let (a, sa) = join(&mut state, &k, 1, &[]);
    let (b, _) = join(&mut state, &k, 2, &[]);
    let mut session = MapSession::new(b);
    session.full_map(&state, T0);
    let new_ep: SocketAddr = "198.18.9.9:1234".parse().expect("addr");
    let update = NodeUpdate {
        endpoints: Some(vec![new_ep]),
        advertised_routes: None,
        health: None,
        priority: None,
        app_connector: None,
    };
    let changes = state.update(a, sa, &update, T0);
    let DeltaOutcome::Send(delta) = session.delta(&PreparedChange::new(&state, &changes, T0))
    else {
        panic!("expected a delta")
    };
    assert!(delta.peers_changed.is_empty());
    assert_eq!(delta.endpoint_patches.len(), 1);
    assert_eq!(delta.endpoint_patches[0].endpoints, vec![new_ep]);
}

#[test]
fn wg_quick_config_lists_nodes_with_endpoints() {
    let mut state = tailnet();
    let k = auth_key(&mut state, &[], 1);
    join(&mut state, &k, 1, &[]);
    let (dev, _) = state
        .add_wireguard_device("printer", key(77), T0)
        .expect("adds");
    let config = state.wg_quick_config(dev, "PRIVATE", T0).expect("exists");
    assert!(config.contains("PrivateKey = PRIVATE"));
    assert!(config.contains("Address = 100.64.0.2/32, fd01:203:405::6440:2/128"));
    assert!(config.contains(&format!("PublicKey = {}", key(101))));
    assert!(config.contains("AllowedIPs = 100.64.0.1/32, fd01:203:405::6440:1/128"));
    assert!(config.contains("Endpoint = 198.18.0.1:41641"));
    assert!(config.contains("PersistentKeepalive = 25"));
    assert!(state.is_online(dev));
}

/// One step of the random walk in the property test.
#[derive(Clone, Debug)]
enum Op {
    Join(u8, bool),
    Disconnect(u8),
    Reconnect(u8),
    Endpoints(u8, u16),
    Routes(u8, bool),
    Approve(u8),
    Unapprove(u8),
    Delete(u8),
    Expire(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let n = 0u8..6;
    prop_oneof![
        (n.clone(), any::<bool>()).prop_map(|(n, r)| Op::Join(n, r)),
        n.clone().prop_map(Op::Disconnect),
        n.clone().prop_map(Op::Reconnect),
        (n.clone(), any::<u16>()).prop_map(|(n, p)| Op::Endpoints(n, p)),
        (n.clone(), any::<bool>()).prop_map(|(n, r)| Op::Routes(n, r)),
        n.clone().prop_map(Op::Approve),
        n.clone().prop_map(Op::Unapprove),
        n.clone().prop_map(Op::Delete),
        n.prop_map(Op::Expire),
    ]
}

fn strip_seq(mut map: MapResponse) -> MapResponse {
    map.seq = 0;
    map
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// After any sequence of operations: at most one primary per prefix,
    /// every primary online, approved and advertised; and an observer that
    /// applied every delta holds exactly the full map it would get now.
    #[test]
    fn invariants_hold_and_deltas_match_full_maps(ops in proptest::collection::vec(op(), 1..40)) {
        let mut state = tailnet();
        let k = auth_key(&mut state, &["tag:r"], 200);
        // Every node is tag:r; the observer sees only nodes that serve
        // 198.19.0.0/24 (approved by an admin), so approvals and deletions
        // change what it sees.
        state.set_policy(r#"{
            "tagOwners": {"tag:r": []},
            "acls": [{"action": "accept", "src": ["tag:r"], "dst": ["198.19.0.0/24:5432"]}],
            "autoApprovers": {"routes": {"10.1.0.0/16": ["tag:r"]}},
        }"#, T0).expect("valid");
        // The observer is a node that never changes.
        let (observer, _) = join(&mut state, &k, 50, &[]);
        let mut session = MapSession::new(observer);
        let mut held = session.full_map(&state, T0);
        let mut sessions: std::collections::BTreeMap<u8, SessionId> = Default::default();
        let prefix_a = net("10.1.0.0/24");
        let prefix_b = net("198.19.0.0/24");
        for (step, op) in ops.into_iter().enumerate() {
            let now = T0 + step as i64;
            let id_of = |state: &TailnetState, n: u8| state.node_by_machine(&key(n)).map(|r| r.id);
            let changes = match op {
                Op::Join(n, routes) => {
                    let routes: Vec<IpNet> = if routes { vec![prefix_a, prefix_b] } else { vec![] };
                    let req = RegisterRequest { node_key: key(n + 100), old_node_key: None, auth_key: Some(k.clone()), hostname: format!("h{n}") };
                    match state.register(key(n), &req, LIFETIME, now) {
                        Ok(reg) => {
                            let mut changes = reg.changes;
                            let map = MapRequest { node_key: key(n + 100), hostname: format!("h{n}"), endpoints: vec![], advertised_routes: routes, health: None, priority: None, app_connector: None };
                            if let Ok((_, s, c)) = state.connect(key(n), &map, now) {
                                sessions.insert(n, s);
                                changes.merge(c);
                            }
                            changes
                        }
                        Err(_) => ChangeSet::default(),
                    }
                }
                Op::Disconnect(n) => match (id_of(&state, n), sessions.get(&n)) {
                    (Some(id), Some(&s)) => state.disconnect(id, s, now),
                    _ => ChangeSet::default(),
                },
                Op::Reconnect(n) => {
                    let map = MapRequest { node_key: key(n + 100), hostname: format!("h{n}"), endpoints: vec![], advertised_routes: vec![prefix_a, prefix_b], health: None, priority: None, app_connector: None };
                    match state.connect(key(n), &map, now) {
                        Ok((_, s, c)) => { sessions.insert(n, s); c }
                        Err(_) => ChangeSet::default(),
                    }
                }
                Op::Endpoints(n, port) => match (id_of(&state, n), sessions.get(&n)) {
                    (Some(id), Some(&s)) => {
                        let ep = SocketAddr::from(([198, 18, 0, n], port));
                        state.update(id, s, &NodeUpdate { endpoints: Some(vec![ep]), advertised_routes: None, health: None, priority: None, app_connector: None }, now)
                    }
                    _ => ChangeSet::default(),
                },
                Op::Routes(n, on) => match (id_of(&state, n), sessions.get(&n)) {
                    (Some(id), Some(&s)) => {
                        let routes = if on { vec![prefix_a, prefix_b] } else { vec![] };
                        state.update(id, s, &NodeUpdate { endpoints: None, advertised_routes: Some(routes), health: None, priority: None, app_connector: None }, now)
                    }
                    _ => ChangeSet::default(),
                },
                Op::Approve(n) => id_of(&state, n)
                    .and_then(|id| state.approve_route(id, prefix_b, now).ok())
                    .unwrap_or_default(),
                Op::Unapprove(n) => id_of(&state, n)
                    .and_then(|id| state.unapprove_route(id, prefix_a, now).ok())
                    .unwrap_or_default(),
                Op::Delete(n) => id_of(&state, n)
                    .and_then(|id| state.delete_node(id, now).ok())
                    .unwrap_or_default(),
                Op::Expire(n) => id_of(&state, n)
                    .and_then(|id| state.expire_node(id, now).ok())
                    .unwrap_or_default(),
            };
            let mut changes = changes;
            changes.merge(state.expire_due(now));

            for (prefix, id) in state.primaries() {
                let node = state.node(*id).expect("primary exists");
                prop_assert!(state.is_online(*id));
                prop_assert!(!node.is_expired(now));
                prop_assert!(node.approved_routes.contains(prefix) && node.advertised_routes.contains(prefix));
            }
            let mut owners = 0;
            for node in state.nodes() {
                if state.primary_routes(node.id).contains(&prefix_a) { owners += 1; }
            }
            prop_assert!(owners <= 1);

            let prepared = PreparedChange::new(&state, &changes, now);
            match session.delta(&prepared) {
                DeltaOutcome::Send(delta) => {
                    prop_assert!(!delta.is_full());
                    apply_delta(&mut held, &delta);
                }
                DeltaOutcome::Nothing => {}
                other => prop_assert!(false, "observer unexpectedly got {:?}", other),
            }
            let fresh = MapSession::new(observer).full_map(&state, now);
            prop_assert_eq!(strip_seq(held.clone()), strip_seq(fresh));
        }
    }
}

#[test]
fn split_dns_reaches_connected_nodes_as_a_dns_delta() {
    let mut state = tailnet();
    let k = auth_key(&mut state, &[], 1);
    let (a, _) = join(&mut state, &k, 1, &[]);
    let mut session = MapSession::new(a);
    session.full_map(&state, T0);
    let resolver: std::net::IpAddr = "198.19.0.2".parse().expect("addr");

    let (name, changes) = state
        .set_split_dns("Corp.Example.", vec![resolver], T0)
        .expect("valid entry");

    assert_eq!(name, "corp.example");
    assert!(changes.split_dns_changed && changes.dns_changed);
    let DeltaOutcome::Send(delta) = session.delta(&PreparedChange::new(&state, &changes, T0))
    else {
        panic!("expected a DNS delta")
    };
    let dns = delta.dns.expect("the delta carries DNS");
    assert_eq!(dns.split.get("corp.example"), Some(&vec![resolver]));
    // Setting the same entry again changes nothing.
    let (_, again) = state
        .set_split_dns("corp.example", vec![resolver], T0)
        .expect("valid entry");
    assert!(again.is_empty());
    // Removing it is another DNS change.
    let removed = state.remove_split_dns("corp.example.", T0).expect("exists");
    assert!(removed.dns_changed);
    assert!(state.split_dns().is_empty());
}

#[test]
fn bad_split_dns_entries_are_refused_and_change_nothing() {
    let mut state = tailnet();
    let resolver: std::net::IpAddr = "198.19.0.2".parse().expect("addr");
    let own = format!("db.{}", state.info().domain);
    let before = state.dns();
    for (domain, resolvers) in [
        ("", vec![resolver]),
        ("a..b", vec![resolver]),
        ("-corp.example", vec![resolver]),
        ("corp example", vec![resolver]),
        (own.as_str(), vec![resolver]),
        ("corp.example", vec![]),
        ("corp.example", vec![resolver; MAX_SPLIT_DNS_RESOLVERS + 1]),
    ] {
        let err = state
            .set_split_dns(domain, resolvers, T0)
            .expect_err("refused");
        assert!(err.to_string().contains("split-DNS domain"), "{err}");
    }
    assert_eq!(
        state.remove_split_dns("corp.example", T0),
        Err(AdminError::SplitDnsNotFound("corp.example".into()))
    );
    assert_eq!(state.dns(), before);
}

#[test]
fn without_a_policy_every_node_gets_the_default_policys_filter_and_every_peer() {
    let mut state = tailnet();
    let k = auth_key(&mut state, &[], 1);
    let (a, _) = join(&mut state, &k, 1, &["198.19.1.0/24", "0.0.0.0/0"]);
    let (b, _) = join(&mut state, &k, 2, &[]);
    let before = MapSession::new(b).full_map(&state, T0);

    let approved = state
        .approve_route(a, net("198.19.1.0/24"), T0 + 1)
        .expect("advertised route");
    let exit = state
        .approve_route(a, net("0.0.0.0/0"), T0 + 2)
        .expect("advertised route");
    let after = MapSession::new(b).full_map(&state, T0 + 2);

    // Tailscale's default policy, `*` to `*:*`: the tailnet's ranges (and
    // approved subnet routes) to anything, never the whole internet.
    let policy = Policy::parse(r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#)
        .expect("valid policy");
    let nodes: Vec<PolicyNode> = state.nodes().map(NodeRecord::policy_node).collect();
    let compiled = compile(&policy, state.info().ula, &nodes);
    assert_eq!(after.packet_filter.as_ref(), Some(&compiled[&b].filter));
    let sources = |map: &MapResponse| {
        map.packet_filter.as_ref().expect("filter").rules[0]
            .sources
            .clone()
    };
    assert!(!sources(&before).contains(&net("0.0.0.0/0")));
    assert!(!sources(&before).contains(&net("198.19.1.0/24")));
    assert!(sources(&after).contains(&net("198.19.1.0/24")));
    assert!(!sources(&after).contains(&net("0.0.0.0/0")));
    assert!(approved.access.contains(&b));
    assert!(exit.access.is_empty());
    assert!(peer(&before, a).is_some() && peer(&after, a).is_some());
}

const DBA_WEB_POLICY: &str = r#"{
    "tagOwners": {"tag:router": [], "tag:dba-clients": [], "tag:web-clients": []},
    "autoApprovers": {"routes": {"198.19.1.0/24": ["tag:router"]}},
    "acls": [
        {"action": "accept", "src": ["tag:dba-clients"], "dst": ["198.19.1.0/24:5432"]},
        {"action": "accept", "src": ["tag:web-clients"], "dst": ["198.19.1.0/24:80"]},
    ],
}"#;

const SWAPPED_POLICY: &str = r#"{
    "tagOwners": {"tag:router": [], "tag:dba-clients": [], "tag:web-clients": []},
    "autoApprovers": {"routes": {"198.19.1.0/24": ["tag:router"]}},
    "acls": [
        {"action": "accept", "src": ["tag:dba-clients"], "dst": ["198.19.1.0/24:80"]},
    ],
}"#;

fn dest_ports(filter: &causeway_wire::PacketFilter) -> Vec<(Vec<IpNet>, u16)> {
    filter
        .rules
        .iter()
        .flat_map(|r| {
            r.destinations
                .iter()
                .map(|d| (r.sources.clone(), d.ports.first))
        })
        .collect()
}

#[test]
fn the_router_gets_the_filter_and_clients_see_only_what_they_may_reach() {
    let mut state = tailnet();
    state.set_policy(DBA_WEB_POLICY, T0).expect("valid policy");
    let (r, _) = {
        let k = auth_key(&mut state, &["tag:router"], 1);
        join(&mut state, &k, 1, &["198.19.1.0/24"])
    };
    let (dba, _) = {
        let k = auth_key(&mut state, &["tag:dba-clients"], 2);
        join(&mut state, &k, 2, &[])
    };
    let (web, _) = {
        let k = auth_key(&mut state, &["tag:web-clients"], 3);
        join(&mut state, &k, 3, &[])
    };

    let router_map = MapSession::new(r).full_map(&state, T0);
    let dba_map = MapSession::new(dba).full_map(&state, T0);

    let dba_addresses = state.node(dba).expect("dba").addresses();
    let web_addresses = state.node(web).expect("web").addresses();
    let filter = router_map
        .packet_filter
        .clone()
        .expect("the router gets a filter");
    assert_eq!(
        dest_ports(&filter),
        vec![(dba_addresses, 5432), (web_addresses, 80)]
    );
    // Clients accept nothing; the router sees both, each client only it.
    assert_eq!(
        dba_map.packet_filter,
        Some(causeway_wire::PacketFilter::default())
    );
    assert!(peer(&router_map, dba).is_some() && peer(&router_map, web).is_some());
    assert!(peer(&dba_map, r).is_some());
    assert!(peer(&dba_map, web).is_none());
}

#[test]
fn a_policy_change_reaches_open_streams_as_filter_and_peer_deltas() {
    let mut state = tailnet();
    state.set_policy(DBA_WEB_POLICY, T0).expect("valid policy");
    let k = auth_key(&mut state, &["tag:router"], 1);
    let (r, _) = join(&mut state, &k, 1, &["198.19.1.0/24"]);
    let k = auth_key(&mut state, &["tag:dba-clients"], 2);
    let (dba, _) = join(&mut state, &k, 2, &[]);
    let k = auth_key(&mut state, &["tag:web-clients"], 3);
    let (web, _) = join(&mut state, &k, 3, &[]);
    let mut sessions = open_sessions(&state, &[r, dba, web]);

    let changes = state
        .set_policy(SWAPPED_POLICY, T0 + 1)
        .expect("valid policy");

    assert_eq!(changes.access, [r, web].into());
    let prepared = PreparedChange::new(&state, &changes, T0 + 1);
    for (id, session, held) in &mut sessions {
        match session.delta(&prepared) {
            DeltaOutcome::Send(delta) => apply_delta(held, &delta),
            DeltaOutcome::Nothing => {}
            other => panic!("node {id} got {other:?}"),
        }
        let fresh = MapSession::new(*id).full_map(&state, T0 + 1);
        assert_eq!(strip_seq(held.clone()), strip_seq(fresh), "node {id}");
    }
    let router_filter = sessions[0].2.packet_filter.clone().expect("filter");
    let dba_addresses = state.node(dba).expect("dba").addresses();
    assert_eq!(dest_ports(&router_filter), vec![(dba_addresses, 80)]);
    assert!(
        peer(&sessions[2].2, r).is_none(),
        "web no longer sees the router"
    );
    assert!(
        peer(&sessions[0].2, web).is_none(),
        "the router no longer sees web"
    );
}

#[test]
fn an_app_grant_reaches_the_recorders_stream_as_a_cap_grant_delta_and_goes_away() {
    let open = r#"{
        "tagOwners": {"tag:rec": [], "tag:ops": []},
        "grants": [{"src": ["*"], "dst": ["*"], "ip": ["*"]}],
    }"#;
    let with_grant = r#"{
        "tagOwners": {"tag:rec": [], "tag:ops": []},
        "grants": [
            {"src": ["*"], "dst": ["*"], "ip": ["*"]},
            {"src": ["tag:ops"], "dst": ["tag:rec"],
             "app": {"tailscale.com/cap/tsrecorder": [{"actions": ["view"]}]}},
        ],
    }"#;
    let mut state = tailnet();
    state.set_policy(open, T0).expect("valid policy");
    let k = auth_key(&mut state, &["tag:rec"], 1);
    let (rec, _) = join(&mut state, &k, 1, &[]);
    let k = auth_key(&mut state, &["tag:ops"], 2);
    let (ops, _) = join(&mut state, &k, 2, &[]);
    let mut sessions = open_sessions(&state, &[rec, ops]);
    assert_eq!(sessions[0].2.cap_grants, None);

    for (step, text) in [with_grant, open].into_iter().enumerate() {
        let now = T0 + 1 + step as i64;
        let changes = state.set_policy(text, now).expect("valid policy");

        // Only the recorder's cap grants change: no other stream hears of it.
        assert_eq!(changes.access, [rec].into());
        let prepared = PreparedChange::new(&state, &changes, now);
        let DeltaOutcome::Send(delta) = sessions[0].1.delta(&prepared) else {
            panic!("the recorder gets a delta");
        };
        assert!(delta.packet_filter.is_none() && delta.peers_changed.is_empty());
        let grants = delta.cap_grants.clone().expect("cap grants in the delta");
        apply_delta(&mut sessions[0].2, &delta);
        assert_eq!(sessions[1].1.delta(&prepared), DeltaOutcome::Nothing);
        let fresh = MapSession::new(rec).full_map(&state, now);
        assert_eq!(strip_seq(sessions[0].2.clone()), strip_seq(fresh));
        if step == 0 {
            let ops_addresses = state.node(ops).expect("ops").addresses();
            assert_eq!(grants.len(), 1);
            assert_eq!(grants[0].sources, ops_addresses);
            assert!(
                grants[0]
                    .caps
                    .contains_key(causeway_wire::caps::RECORDER_CAP)
            );
        } else {
            assert!(grants.is_empty(), "the grant is withdrawn: {grants:?}");
        }
    }
}

#[test]
fn a_policy_giving_a_node_too_many_capability_bytes_is_refused_naming_it() {
    let mut state = tailnet();
    let k = auth_key(&mut state, &[], 1);
    let (id, _) = join(&mut state, &k, 1, &[]);
    // Each grant is under the per-grant limit; together they are over the
    // per-node limit for the one node they all name.
    let pad = "x".repeat(15_000);
    let grants: Vec<String> = (0..80)
        .map(|i| {
            format!(
                r#"{{"src": ["*"], "dst": ["*"], "app": {{"example.com/cap/x": [{{"n": {i}, "pad": "{pad}"}}]}}}}"#
            )
        })
        .collect();
    let text = format!(r#"{{"grants": [{}]}}"#, grants.join(","));

    let err = state.set_policy(&text, T0).expect_err("too large");

    assert!(
        err.to_string()
            .contains("node host1 would get application capabilities too large to send"),
        "{err}"
    );
    assert!(
        matches!(state.access(id), NodeAccess::AllowAll(_)),
        "nothing changed"
    );
}

#[test]
fn endpoint_updates_do_not_recompile_but_a_new_router_does() {
    let mut state = tailnet();
    state.set_policy(DBA_WEB_POLICY, T0).expect("valid policy");
    let k = auth_key(&mut state, &["tag:dba-clients"], 2);
    let (dba, s) = join(&mut state, &k, 2, &[]);
    let update = NodeUpdate {
        endpoints: Some(vec![SocketAddr::from(([198, 18, 0, 9], 1))]),
        advertised_routes: None,
        health: None,
        priority: None,
        app_connector: None,
    };

    let moved = state.update(dba, s, &update, T0 + 1);
    let k = auth_key(&mut state, &["tag:router"], 1);
    let req = RegisterRequest {
        node_key: key(101),
        old_node_key: None,
        auth_key: Some(k),
        hostname: "router".into(),
    };
    let joined = state
        .register(key(1), &req, LIFETIME, T0 + 2)
        .expect("registers");
    let map = MapRequest {
        node_key: key(101),
        hostname: "router".into(),
        endpoints: vec![],
        advertised_routes: vec![net("198.19.1.0/24")],
        health: None,
        priority: None,
        app_connector: None,
    };
    let (r, _, connected) = state.connect(key(1), &map, T0 + 2).expect("connects");

    assert!(moved.access.is_empty());
    // Joined without routes: the router is nobody's peer yet.
    assert_eq!(joined.changes.access, [joined.node_id].into());
    // Its approved route makes it serve 198.19.1.0/24: both ends change.
    assert_eq!(connected.access, [dba, r].into());
}

#[test]
fn a_policy_giving_a_node_an_oversized_filter_is_refused_and_changes_nothing() {
    let mut state = tailnet();
    state.set_policy(DBA_WEB_POLICY, T0).expect("valid policy");
    let k = auth_key(&mut state, &[], 1);
    let (a, _) = join(&mut state, &k, 1, &[]);
    let before = state.access(a);
    // One rule per distinct source: more rules than a filter may hold.
    let acls: Vec<String> = (0..=causeway_wire::MAX_FILTER_RULES)
        .map(|i| {
            format!(
                r#"{{"action": "accept", "src": ["10.{}.{}.1"], "dst": ["*:*"]}}"#,
                i / 256,
                i % 256
            )
        })
        .collect();
    let text = format!(r#"{{"acls": [{}]}}"#, acls.join(","));

    let refused = state.set_policy(&text, T0 + 1);

    let Err(AdminError::Policy(PolicyError::Invalid(message))) = refused else {
        panic!("expected a refusal, got {refused:?}");
    };
    assert!(
        message.contains("node host1") && message.contains("10001 rules"),
        "{message}"
    );
    assert_eq!(state.policy_text(), Some(DBA_WEB_POLICY));
    assert_eq!(state.access(a), before);
}

#[test]
fn approving_a_route_adds_it_to_every_star_source_and_unapproving_removes_it() {
    let mut state = tailnet();
    state
        .set_policy(
            r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:22"]}]}"#,
            T0,
        )
        .expect("valid policy");
    let k = auth_key(&mut state, &[], 1);
    let (router, _) = join(&mut state, &k, 1, &["198.19.1.0/24", "0.0.0.0/0"]);
    let (server, _) = join(&mut state, &k, 2, &[]);
    let sources = |state: &TailnetState| state.access(server).filter().rules[0].sources.clone();
    let before = sources(&state);

    let approved = state
        .approve_route(router, net("198.19.1.0/24"), T0 + 1)
        .expect("advertised route");
    let with_route = sources(&state);
    let exit = state
        .approve_route(router, net("0.0.0.0/0"), T0 + 2)
        .expect("advertised route");
    let with_exit = sources(&state);
    let withdrawn = state
        .unapprove_route(router, net("198.19.1.0/24"), T0 + 3)
        .expect("valid prefix");

    assert!(!before.contains(&net("198.19.1.0/24")));
    assert!(before.contains(&net("100.64.0.0/11")));
    assert!(approved.access.contains(&server) && approved.access.contains(&router));
    let mut want = before.clone();
    want.push(net("198.19.1.0/24"));
    want.sort();
    assert_eq!(with_route, want);
    // An exit route is not a subnet: `*` does not take in the internet.
    assert!(!exit.access.contains(&server));
    assert_eq!(with_exit, with_route);
    assert!(withdrawn.access.contains(&server));
    assert_eq!(sources(&state), before);
}

/// A map session per node, each with the full map it opened with (at T0).
fn open_sessions(state: &TailnetState, ids: &[NodeId]) -> Vec<(NodeId, MapSession, MapResponse)> {
    ids.iter()
        .map(|&id| {
            let mut s = MapSession::new(id);
            let full = s.full_map(state, T0);
            (id, s, full)
        })
        .collect()
}

/// Two routers for one prefix (auto-approved), a client, and the prefix.
fn ha_pair(state: &mut TailnetState) -> (NodeId, SessionId, NodeId, SessionId, NodeId, IpNet) {
    state
        .set_policy(
            r#"{"autoApprovers": {"routes": {"198.19.1.0/24": ["tag:r"]}},
                "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#,
            T0,
        )
        .expect("valid");
    let k = auth_key(state, &["tag:r"], 1);
    let (a, sa) = join(state, &k, 1, &["198.19.1.0/24"]);
    let (b, sb) = join(state, &k, 2, &["198.19.1.0/24"]);
    let kc = auth_key(state, &[], 2);
    let (c, _) = join(state, &kc, 3, &[]);
    (a, sa, b, sb, c, net("198.19.1.0/24"))
}

fn health(prefix: IpNet, healthy: bool) -> NodeUpdate {
    NodeUpdate {
        health: Some(vec![causeway_wire::RouteHealth {
            prefix,
            healthy,
            reason: if healthy {
                String::new()
            } else {
                "carrier down".into()
            },
        }]),
        ..NodeUpdate::default()
    }
}

#[test]
fn an_unhealthy_primary_hands_the_route_to_the_standby_and_the_client_hears_it() {
    let mut state = tailnet();
    let (a, sa, b, _, c, p) = ha_pair(&mut state);
    assert_eq!(state.primaries().get(&p), Some(&a));
    let mut sessions = open_sessions(&state, &[c]);
    let hold = DEFAULT_ROUTE_HOLD_DOWN;
    // Past the hold-down both routers are eligible.
    let now = T0 + hold;
    assert_eq!(
        state.route_standing(b, &p, now),
        Some(routes::Standing::Eligible)
    );
    let changes = state.update(a, sa, &health(p, false), now);
    assert_eq!(state.primaries().get(&p), Some(&b));
    assert!(changes.nodes.contains(&a) && changes.nodes.contains(&b));
    let report = state.router_report(a).expect("a reported");
    assert_eq!(
        report.health.get(&p).map(|h| h.reason.as_str()),
        Some("carrier down")
    );
    let (_, session, _) = &mut sessions[0];
    let DeltaOutcome::Send(delta) = session.delta(&PreparedChange::new(&state, &changes, now))
    else {
        panic!("the client must hear that the route moved");
    };
    let moved: Vec<(NodeId, Vec<IpNet>)> = delta
        .peers_changed
        .iter()
        .map(|n| (n.id, n.primary_routes.clone()))
        .collect();
    assert_eq!(moved, vec![(a, vec![]), (b, vec![p])]);
    // a recovers: b keeps the route, and nobody hears of it.
    let changes = state.update(a, sa, &health(p, true), now + 1);
    assert_eq!(state.primaries().get(&p), Some(&b));
    assert_eq!(
        session.delta(&PreparedChange::new(&state, &changes, now + 1)),
        DeltaOutcome::Nothing
    );
}

#[test]
fn a_health_change_that_moves_nothing_sends_no_delta() {
    let mut state = tailnet();
    let (a, _, b, sb, c, p) = ha_pair(&mut state);
    let mut sessions = open_sessions(&state, &[c, a]);
    let now = T0 + DEFAULT_ROUTE_HOLD_DOWN;
    let changes = state.update(b, sb, &health(p, false), now);
    assert_eq!(state.primaries().get(&p), Some(&a));
    for (_, session, _) in &mut sessions {
        assert_eq!(
            session.delta(&PreparedChange::new(&state, &changes, now)),
            DeltaOutcome::Nothing
        );
    }
    assert_eq!(
        state.route_standing(b, &p, now),
        Some(routes::Standing::Unhealthy)
    );
}

#[test]
fn a_recovered_router_waits_out_the_hold_down_then_the_timer_moves_the_route() {
    let mut state = tailnet();
    state.set_route_hold_down(10);
    let (a, sa, b, sb, _, p) = ha_pair(&mut state);
    assert_eq!(state.primaries().get(&p), Some(&a));
    // b goes unhealthy, then a too: nobody is eligible, a keeps the route.
    state.update(b, sb, &health(p, false), T0 + 20);
    state.update(a, sa, &health(p, false), T0 + 21);
    assert_eq!(state.primaries().get(&p), Some(&a));
    // b recovers at T0+22: in hold-down until T0+32, and control is told
    // when to look again.
    state.update(b, sb, &health(p, true), T0 + 22);
    assert_eq!(state.primaries().get(&p), Some(&a));
    assert_eq!(
        state.route_standing(b, &p, T0 + 22),
        Some(routes::Standing::HoldDown)
    );
    assert_eq!(state.route_wakeup(), Some(T0 + 32));
    assert!(state.reselect_routes(T0 + 31).nodes.is_empty());
    assert_eq!(state.primaries().get(&p), Some(&a));
    let changes = state.reselect_routes(T0 + 32);
    assert_eq!(state.primaries().get(&p), Some(&b));
    assert_eq!(changes.nodes, [a, b].into_iter().collect());
    assert_eq!(state.route_wakeup(), None);
}

#[test]
fn priority_decides_a_free_route_and_a_reconnect_resets_the_report() {
    let mut state = tailnet();
    let (a, sa, b, sb, _, p) = ha_pair(&mut state);
    let now = T0 + DEFAULT_ROUTE_HOLD_DOWN;
    state.update(
        b,
        sb,
        &NodeUpdate {
            priority: Some(5),
            app_connector: None,
            ..NodeUpdate::default()
        },
        now,
    );
    assert_eq!(state.router_report(b).map(|r| r.priority), Some(5));
    // a goes away: b takes over; a comes back with a higher priority and
    // does not preempt the healthy b.
    state.disconnect(a, sa, now);
    assert_eq!(state.primaries().get(&p), Some(&b));
    let map = MapRequest {
        node_key: key(101),
        hostname: "host1".into(),
        endpoints: vec![],
        advertised_routes: vec![p],
        health: Some(vec![causeway_wire::RouteHealth {
            prefix: p,
            healthy: true,
            reason: String::new(),
        }]),
        priority: Some(9),
        app_connector: None,
    };
    let (_, sa, _) = state.connect(key(1), &map, now + 1).expect("reconnects");
    assert_eq!(state.primaries().get(&p), Some(&b));
    // b goes unhealthy while a is still in hold-down: b keeps the route
    // until a has been back for the hold-down.
    state.update(b, sb, &health(p, false), now + 2);
    assert_eq!(state.primaries().get(&p), Some(&b));
    state.reselect_routes(now + 1 + DEFAULT_ROUTE_HOLD_DOWN);
    assert_eq!(state.primaries().get(&p), Some(&a));
    let _ = sa;
}

#[test]
fn an_oversized_health_report_is_bounded() {
    let mut state = tailnet();
    let (a, sa, _, _, _, p) = ha_pair(&mut state);
    let many: Vec<causeway_wire::RouteHealth> = (0..causeway_wire::MAX_ROUTE_HEALTH as u32 + 50)
        .map(|i| causeway_wire::RouteHealth {
            prefix: IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(i))),
            healthy: false,
            reason: "é".repeat(causeway_wire::MAX_HEALTH_REASON),
        })
        .collect();
    let update = NodeUpdate {
        health: Some(many),
        ..NodeUpdate::default()
    };
    state.update(a, sa, &update, T0);
    let report = state.router_report(a).expect("reported");
    assert_eq!(report.health.len(), causeway_wire::MAX_ROUTE_HEALTH);
    assert!(
        report
            .health
            .values()
            .all(|h| h.reason.len() <= causeway_wire::MAX_HEALTH_REASON && !h.reason.is_empty())
    );
    // p is not among them: it counts as healthy.
    assert!(report.is_healthy(&p));
}

proptest! {
    /// A router whose health toggles faster than the hold-down never gets
    /// the route back from a healthy primary, nor from an unhealthy one;
    /// and the primary is always a candidate.
    #[test]
    fn a_router_flapping_faster_than_the_hold_down_never_regains_the_route(
        gaps in proptest::collection::vec(1i64..10, 1..40),
        standby_sick_at in proptest::option::of(0usize..40),
    ) {
        let mut state = tailnet();
        state.set_route_hold_down(10);
        let (a, sa, b, sb, _, p) = ha_pair(&mut state);
        let mut now = T0 + 10;
        state.update(a, sa, &health(p, false), now);
        prop_assert_eq!(state.primaries().get(&p), Some(&b));
        let mut a_healthy = false;
        for (i, gap) in gaps.iter().enumerate() {
            // Any hold-down ending before the next toggle is acted on.
            while let Some(at) = state.route_wakeup().filter(|&at| at < now + gap) {
                state.reselect_routes(at);
                prop_assert_eq!(state.primaries().get(&p), Some(&b));
            }
            now += gap;
            a_healthy = !a_healthy;
            if standby_sick_at == Some(i) {
                state.update(b, sb, &health(p, false), now);
            }
            state.update(a, sa, &health(p, a_healthy), now);
            let primary = state.primaries().get(&p).copied();
            prop_assert_eq!(primary, Some(b), "the flapping router took the route at step {}", i);
            prop_assert!(state.route_standing(b, &p, now).is_some());
        }
    }
}

#[test]
fn an_exit_nodes_health_reaches_its_clients_as_a_delta() {
    let mut state = tailnet();
    allow_exit_nodes(&mut state);
    let exit_key = auth_key(&mut state, &["tag:exit"], 1);
    let plain = auth_key(&mut state, &[], 2);
    let (exit, session) = join(&mut state, &exit_key, 1, &["0.0.0.0/0", "::/0"]);
    let (client, _) = join(&mut state, &plain, 2, &[]);
    let mut sessions = open_sessions(&state, &[client]);
    let (_, client_session, full) = &mut sessions[0];
    assert!(!peer(full, exit).expect("visible").exit_unhealthy);

    let changes = state.update(exit, session, &health(net("0.0.0.0/0"), false), T0 + 1);
    let DeltaOutcome::Send(delta) =
        client_session.delta(&PreparedChange::new(&state, &changes, T0 + 1))
    else {
        panic!("the client must hear that its exit node is unhealthy");
    };
    let changed: Vec<(NodeId, bool)> = delta
        .peers_changed
        .iter()
        .map(|n| (n.id, n.exit_unhealthy))
        .collect();
    assert_eq!(changed, vec![(exit, true)]);
    // Exit routes never become primary, healthy or not.
    assert!(state.primary_routes(exit).is_empty());

    let changes = state.update(exit, session, &health(net("0.0.0.0/0"), true), T0 + 2);
    let DeltaOutcome::Send(delta) =
        client_session.delta(&PreparedChange::new(&state, &changes, T0 + 2))
    else {
        panic!("the client must hear that its exit node recovered");
    };
    assert!(!delta.peers_changed[0].exit_unhealthy);
}

#[test]
fn a_subnet_routers_health_never_marks_it_an_unhealthy_exit_node() {
    let mut state = tailnet();
    let (a, sa, _, _, _, p) = ha_pair(&mut state);
    state.update(a, sa, &health(p, false), T0 + 1);
    let view = state.view(a).expect("a exists");
    assert!(view.exit_routes.is_empty());
    assert!(!view.exit_unhealthy);
}

/// Connects machine `n` as an app connector for `domains`, advertising
/// `routes`.
fn join_connector(
    state: &mut TailnetState,
    key_text: &str,
    n: u8,
    domains: &[&str],
    routes: &[&str],
) -> (NodeId, SessionId) {
    let (id, _) = join(state, key_text, n, &[]);
    let map = MapRequest {
        node_key: key(n + 100),
        hostname: format!("host{n}"),
        endpoints: vec![],
        advertised_routes: routes.iter().map(|r| net(r)).collect(),
        health: None,
        priority: None,
        app_connector: Some(domains.iter().map(|d| (*d).to_owned()).collect()),
    };
    let (again, session, _) = state.connect(key(n), &map, T0).expect("connects");
    assert_eq!(id, again);
    (id, session)
}

#[test]
fn app_connector_routes_are_approved_inside_a_named_prefix_only_when_public() {
    let mut state = tailnet();
    state
        .set_policy(
            r#"{"autoApprovers": {"routes": {"0.0.0.0/0": ["tag:connector"], "198.19.0.0/16": ["tag:router"]}}, "acls": []}"#,
            T0,
        )
        .expect("valid policy");
    let connector_key = auth_key(&mut state, &["tag:connector"], 1);
    let router_key = auth_key(&mut state, &["tag:router"], 2);
    let (c, _) = join_connector(
        &mut state,
        &connector_key,
        1,
        &["example.com"],
        &[
            "198.18.7.1/32",
            "203.0.113.0/31",
            "10.1.2.3/32",
            "0.0.0.0/0",
        ],
    );
    let approved: Vec<IpNet> = state
        .node(c)
        .expect("c")
        .approved_routes
        .iter()
        .copied()
        .collect();
    // Public prefixes inside 0.0.0.0/0 are approved; a private one and the
    // exit route are not.
    assert_eq!(approved, [net("198.18.7.1/32"), net("203.0.113.0/31")]);
    // A route the connector stops advertising loses its approval.
    let session = state.presence(c).session.expect("online");
    state.update(
        c,
        session,
        &NodeUpdate {
            advertised_routes: Some(vec![net("203.0.113.0/31")]),
            ..NodeUpdate::default()
        },
        T0,
    );
    let approved: Vec<IpNet> = state
        .node(c)
        .expect("c")
        .approved_routes
        .iter()
        .copied()
        .collect();
    assert_eq!(approved, [net("203.0.113.0/31")]);
    // A subnet router (no connector domains) still needs the exact prefix,
    // even if it claims a public address inside a named range.
    let (r, _) = join(
        &mut state,
        &router_key,
        2,
        &["198.19.5.0/24", "198.19.0.0/16"],
    );
    let approved: Vec<IpNet> = state
        .node(r)
        .expect("r")
        .approved_routes
        .iter()
        .copied()
        .collect();
    assert_eq!(approved, [net("198.19.0.0/16")]);
}

#[test]
fn a_connectors_domains_are_split_dns_while_it_is_online() {
    let mut state = tailnet();
    let k = auth_key(&mut state, &[], 1);
    let (client, _) = join(&mut state, &k, 2, &[]);
    let mut session = MapSession::new(client);
    session.full_map(&state, T0);
    let (c, c_session) = join_connector(
        &mut state,
        &k,
        1,
        &[
            "Example.COM.",
            "app.example.net",
            "not a name",
            "example.com",
        ],
        &[],
    );
    let ip: std::net::IpAddr = state.node(c).expect("c").ipv4.into();
    let (_, dns) = state.dns();
    assert_eq!(
        dns.split,
        [
            ("app.example.net".to_owned(), vec![ip]),
            ("example.com".to_owned(), vec![ip]),
        ]
        .into()
    );
    // An admin's entry for the same domain wins.
    let admin: std::net::IpAddr = "198.19.0.2".parse().expect("addr");
    state
        .set_split_dns("example.com", vec![admin], T0)
        .expect("valid entry");
    assert_eq!(state.dns().1.split.get("example.com"), Some(&vec![admin]));
    state.remove_split_dns("example.com", T0).expect("exists");

    // Changing the domains is a DNS delta for the other nodes.
    session.full_map(&state, T0);
    let changes = state.update(
        c,
        c_session,
        &NodeUpdate {
            app_connector: Some(vec!["app.example.net".to_owned()]),
            ..NodeUpdate::default()
        },
        T0,
    );
    assert!(changes.dns_changed);
    let DeltaOutcome::Send(delta) = session.delta(&PreparedChange::new(&state, &changes, T0))
    else {
        panic!("expected a DNS delta")
    };
    let split = delta.dns.expect("the delta carries DNS").split;
    assert_eq!(split, [("app.example.net".to_owned(), vec![ip])].into());

    // Offline: its domains leave split DNS.
    let changes = state.disconnect(c, c_session, T0);
    assert!(changes.dns_changed);
    assert!(state.dns().1.split.is_empty());
}
