//! Admin API JSON bodies (the request types control parses,
//! `causeway_wire::admin`) into the tailnet calls they drive, as
//! control/src/admin_api.rs makes them. Never panics.
//!
//! Input: first byte picks the endpoint, the rest is the JSON body.
//! 0: POST /api/v1/keys → `create_auth_key`
//! 1: POST /api/v1/wireguard-devices → `add_wireguard_device_for`, `wg_quick_config`
//! 2/3: POST /api/v1/routes/{approve,unapprove} → `find_node`, prefix parse,
//!      `approve_route` / `unapprove_route`
#![no_main]

use std::sync::LazyLock;

use causeway_tailnet::addresses::ula_from_random;
use causeway_tailnet::{AuthKeySpec, TailnetInfo, TailnetState};
use causeway_wire::PublicKey;
use causeway_wire::admin::{AddDeviceRequest, CreateKeyRequest, RouteRequest};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_700_000_000;

/// A tailnet with two WireGuard-only devices, "gw" (id 1) and "db" (id 2).
static STATE: LazyLock<TailnetState> = LazyLock::new(|| {
    let mut state = TailnetState::new(TailnetInfo::new("fuzz", ula_from_random([1, 2, 3, 4, 5])));
    for (n, name) in [(1u8, "gw"), (2, "db")] {
        state
            .add_wireguard_device(name, PublicKey::from_bytes([n; 32]), NOW)
            .expect("device added");
    }
    state
});

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let mut state = STATE.clone();
    match which % 4 {
        0 => {
            let Ok(req) = serde_json::from_slice::<CreateKeyRequest>(body) else {
                return;
            };
            let spec = AuthKeySpec {
                reusable: req.reusable,
                ephemeral: req.ephemeral,
                tags: req.tags,
                expiry_seconds: req.expiry_seconds,
                user: req.user,
            };
            if let Ok((new, _)) = state.create_auth_key(&spec, [7; 6], [9; 24], NOW) {
                let _ = state.validate_auth_key(&new.secret, NOW);
            }
        }
        1 => {
            let Ok(req) = serde_json::from_slice::<AddDeviceRequest>(body) else {
                return;
            };
            let key = PublicKey::from_bytes([3; 32]);
            if let Ok((id, _)) =
                state.add_wireguard_device_for(&req.name, key, req.user.as_deref(), NOW)
            {
                let config = state
                    .wg_quick_config(id, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", NOW)
                    .expect("config for a device just added");
                assert!(config.contains("[Interface]"));
                let _ = state.view(id);
                let _ = state.dns();
            }
        }
        n => {
            let Ok(req) = serde_json::from_slice::<RouteRequest>(body) else {
                return;
            };
            let Ok(prefix) = req.prefix.parse::<IpNet>() else {
                return;
            };
            let Some(id) = state.find_node(&req.node) else {
                return;
            };
            let _ = if n == 2 {
                state.approve_route(id, prefix, NOW)
            } else {
                state.unapprove_route(id, prefix, NOW)
            };
        }
    }
});
