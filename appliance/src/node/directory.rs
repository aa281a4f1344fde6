//! The tailnet by address, as this node's netmap describes it: the
//! recorder role asks it which node sent a recording or asks to view one,
//! and which application capabilities (the policy's `app` grants naming
//! this node) that node holds here. The data plane has already tied a
//! packet's source address to the peer whose key sent it, so the address
//! names the node.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::RwLock;

use causeway_recorder::{Identity, WhoIs};
use causeway_wire::caps::caps_for;
use causeway_wire::{CapGrant, Node};

/// Each peer's own tailnet addresses (not the routes it serves), with who
/// it is, and the cap grants this node holds. Replaced whenever the
/// netmap's peers or cap grants change.
#[derive(Debug, Default)]
pub struct Directory {
    by_address: RwLock<HashMap<IpAddr, Identity>>,
    cap_grants: RwLock<Vec<CapGrant>>,
}

impl Directory {
    /// Replaces the directory with `peers` and this node's `cap_grants`.
    pub fn replace<'a>(&self, peers: impl Iterator<Item = &'a Node>, cap_grants: &[CapGrant]) {
        let mut by_address = HashMap::new();
        for peer in peers {
            let who = Identity {
                node: peer.name.clone(),
                user: peer.user.clone(),
                tags: peer.tags.clone(),
                caps: Default::default(),
            };
            // Only single-address prefixes: a node's own addresses.
            for net in &peer.addresses {
                if net.prefix_len() == net.max_prefix_len() {
                    by_address.insert(net.addr(), who.clone());
                }
            }
        }
        *self
            .by_address
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = by_address;
        *self
            .cap_grants
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = cap_grants.to_vec();
    }
}

impl WhoIs for Directory {
    fn who_is(&self, addr: IpAddr) -> Option<Identity> {
        let addr = addr.to_canonical();
        let mut who = self
            .by_address
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&addr)
            .cloned()?;
        who.caps = caps_for(
            &self
                .cap_grants
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            addr,
        );
        Some(who)
    }
}

#[cfg(test)]
mod tests {
    use causeway_wire::{NodeId, PrivateKey};

    use super::*;

    fn peer(id: u64, name: &str, user: Option<&str>, tags: &[&str], nets: &[&str]) -> Node {
        let addresses = nets
            .iter()
            .map(|n| n.parse().expect("net"))
            .collect::<Vec<_>>();
        Node {
            id: NodeId(id),
            name: name.to_owned(),
            node_key: PrivateKey::from_random_bytes([id as u8; 32]).public_key(),
            key_expiry: None,
            allowed_ips: addresses.clone(),
            addresses,
            primary_routes: Vec::new(),
            endpoints: Vec::new(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            user: user.map(str::to_owned),
            online: true,
            wireguard_only: false,
            exit_routes: vec![],
            exit_unhealthy: false,
        }
    }

    #[test]
    fn names_the_peer_that_owns_an_address_and_nothing_for_routes_or_strangers() {
        let d = Directory::default();
        let mut router = peer(2, "router", None, &["tag:router"], &["100.64.0.2/32"]);
        router.primary_routes = vec!["198.19.1.0/24".parse().expect("net")];
        router.allowed_ips.extend(router.primary_routes.clone());
        d.replace(
            [
                peer(
                    1,
                    "laptop",
                    Some("alice@example.com"),
                    &[],
                    &["100.64.0.1/32", "fd7a:115c:a1e0::1/128"],
                ),
                router,
            ]
            .iter(),
            &[],
        );
        let laptop = d.who_is("100.64.0.1".parse().expect("ip")).expect("laptop");
        assert_eq!(laptop.node, "laptop");
        assert_eq!(laptop.user.as_deref(), Some("alice@example.com"));
        assert_eq!(
            d.who_is("fd7a:115c:a1e0::1".parse().expect("ip")),
            Some(laptop)
        );
        // An IPv4-mapped IPv6 source (a dual-stack socket) is the IPv4 node.
        assert_eq!(
            d.who_is("::ffff:100.64.0.2".parse().expect("ip"))
                .map(|w| w.tags),
            Some(vec!["tag:router".to_owned()])
        );
        // A host behind the router is not the router.
        assert_eq!(d.who_is("198.19.1.10".parse().expect("ip")), None);
        assert_eq!(d.who_is("100.64.0.9".parse().expect("ip")), None);
        // A peer gone from the netmap is gone from the directory.
        d.replace(std::iter::empty(), &[]);
        assert_eq!(d.who_is("100.64.0.1".parse().expect("ip")), None);
    }

    #[test]
    fn a_peer_holds_the_capabilities_this_nodes_cap_grants_give_its_address() {
        let d = Directory::default();
        let grant = CapGrant {
            sources: vec!["100.64.0.1/32".parse().expect("net")],
            caps: [(
                causeway_wire::caps::RECORDER_CAP.to_owned(),
                vec![serde_json::json!({"actions": ["view"]})],
            )]
            .into_iter()
            .collect(),
        };
        let peers = [
            peer(
                1,
                "alice",
                Some("alice@example.com"),
                &[],
                &["100.64.0.1/32"],
            ),
            peer(2, "bob", Some("bob@example.com"), &[], &["100.64.0.2/32"]),
        ];
        d.replace(peers.iter(), std::slice::from_ref(&grant));

        let alice = d.who_is("100.64.0.1".parse().expect("ip")).expect("alice");
        assert_eq!(alice.caps, grant.caps);
        assert!(causeway_recorder::may_view(&alice));
        let bob = d.who_is("100.64.0.2".parse().expect("ip")).expect("bob");
        assert!(bob.caps.is_empty());
        assert!(!causeway_recorder::may_view(&bob));
        // The grant withdrawn: nobody holds it.
        d.replace(peers.iter(), &[]);
        let alice = d.who_is("100.64.0.1".parse().expect("ip")).expect("alice");
        assert!(alice.caps.is_empty());
    }
}
