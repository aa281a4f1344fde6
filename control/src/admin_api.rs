//! The admin HTTP API (JSON, bearer token). One error type, one mapping to
//! status codes; a refused request changes nothing. Documented in
//! docs/reference/admin-api.md.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bytes::Bytes;
use causeway_tailnet::routes::Standing;
use causeway_tailnet::{AdminError, AuthKey, AuthKeySpec, NodeRecord, TailnetState};
use causeway_wire::admin::{
    AddDeviceRequest, AddedDevice, CreateKeyRequest, CreatedKey, DeletedNode, Done, ErrorBody,
    KeyView, NodeView, RouteHealthView, RouteRequest, RouteView, SplitDnsEntry, SplitDnsRequest,
};
use causeway_wire::{NodeId, PrivateKey, UnixTime};
use ipnet::IpNet;
use serde::de::DeserializeOwned;

use crate::server::{ApplyError, Control, unix_now};

/// The admin router.
pub(crate) fn router(control: Arc<Control>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/keys", post(create_key).get(list_keys))
        .route("/api/v1/keys/{id}", delete(revoke_key))
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/{id}", delete(delete_node))
        .route("/api/v1/nodes/{id}/expire", post(expire_node))
        .route("/api/v1/routes", get(list_routes))
        .route("/api/v1/routes/approve", post(approve_route))
        .route("/api/v1/routes/unapprove", post(unapprove_route))
        .route("/api/v1/wireguard-devices", post(add_wireguard_device))
        .route("/api/v1/policy", get(get_policy).put(put_policy))
        .route("/api/v1/dns/split", get(list_split_dns))
        .route(
            "/api/v1/dns/split/{domain}",
            axum::routing::put(set_split_dns).delete(remove_split_dns),
        )
        .fallback(not_found)
        .with_state(control)
}

/// Every way an admin request fails.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// Missing or wrong bearer token.
    #[error("missing or wrong bearer token (see admin.token in control's state directory)")]
    Unauthorized,
    /// The request was malformed or refused.
    #[error("{0}")]
    BadRequest(String),
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It conflicts with existing state.
    #[error("{0}")]
    Conflict(String),
    /// Control failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        let message = e.to_string();
        match e {
            AdminError::NodeNotFound(_) | AdminError::AuthKeyNotFound(_) => Self::NotFound(message),
            AdminError::RouteNotAdvertised { .. }
            | AdminError::NonCanonicalPrefix { .. }
            | AdminError::InvalidTag(_)
            | AdminError::InvalidUser(_)
            | AdminError::Policy(_)
            | AdminError::InvalidName(_)
            | AdminError::InvalidSplitDnsDomain { .. }
            | AdminError::SplitDnsResolverCount { .. } => Self::BadRequest(message),
            AdminError::SplitDnsNotFound(_) => Self::NotFound(message),
            AdminError::NodeKeyInUse(_) => Self::Conflict(message),
            AdminError::KeyIdCollision | AdminError::AddressesExhausted => Self::Internal(message),
        }
    }
}

impl From<ApplyError<AdminError>> for ApiError {
    fn from(e: ApplyError<AdminError>) -> Self {
        match e {
            ApplyError::Refused(e) => e.into(),
            ApplyError::Storage(e) => Self::Internal(format!("storing the change failed: {e:#}")),
        }
    }
}

/// Proof that the request carried the admin token.
struct Admin;

impl FromRequestParts<Arc<Control>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        control: &Arc<Control>,
    ) -> Result<Self, ApiError> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized)?;
        if constant_time_eq(presented.trim().as_bytes(), control.admin_token.as_bytes()) {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Length is not secret (the token length is fixed); contents are.
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

fn parse_node_id(text: &str) -> Result<NodeId, ApiError> {
    text.parse::<u64>()
        .map(NodeId)
        .map_err(|_| ApiError::BadRequest(format!("invalid node id {text:?}: expected a number")))
}

fn parse_prefix(text: &str) -> Result<IpNet, ApiError> {
    text.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "invalid prefix {text:?}: expected CIDR notation like 198.19.1.0/24"
        ))
    })
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint; see docs/reference/admin-api.md".into())
}

// --- keys -----------------------------------------------------------------

fn key_view(key: &AuthKey, now: UnixTime) -> KeyView {
    KeyView {
        id: key.id.clone(),
        reusable: key.reusable,
        ephemeral: key.ephemeral,
        tags: key.tags.clone(),
        user: key.user.clone(),
        created: key.created,
        expires: key.expires,
        revoked: key.revoked,
        used: key.used,
        usable: key.is_usable(now),
    }
}

async fn create_key(
    _: Admin,
    State(control): State<Arc<Control>>,
    body: Bytes,
) -> Result<Json<CreatedKey>, ApiError> {
    let req: CreateKeyRequest = parse_body(&body)?;
    let spec = AuthKeySpec {
        reusable: req.reusable,
        ephemeral: req.ephemeral,
        tags: req.tags,
        expiry_seconds: req.expiry_seconds,
        user: req.user,
    };
    let new = control.apply(
        |state, now| state.create_auth_key(&spec, rand::random(), rand::random(), now),
        None,
    )?;
    tracing::info!(key_id = %new.key.id, "auth key created");
    Ok(Json(CreatedKey {
        view: key_view(&new.key, unix_now()),
        key: new.secret,
    }))
}

async fn list_keys(_: Admin, State(control): State<Arc<Control>>) -> Json<Vec<KeyView>> {
    let now = unix_now();
    Json(
        control
            .lock()
            .state
            .auth_keys()
            .map(|k| key_view(k, now))
            .collect(),
    )
}

async fn revoke_key(
    _: Admin,
    State(control): State<Arc<Control>>,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    control.apply(|state, _| state.revoke_auth_key(&id).map(|c| ((), c)), None)?;
    tracing::info!(key_id = %id, "auth key revoked");
    let inner = control.lock();
    let key = inner
        .state
        .auth_key(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no auth key {id:?}")))?;
    Ok(Json(key_view(key, unix_now())))
}

// --- nodes ----------------------------------------------------------------

fn node_view(state: &TailnetState, node: &NodeRecord, now: UnixTime) -> NodeView {
    let health = RouterHealth::of(state, node, now);
    NodeView {
        id: node.id,
        name: node.name.clone(),
        hostname: node.hostname.clone(),
        node_key: node.node_key.to_string(),
        machine_key: node.machine_key.map(|k| k.to_string()),
        addresses: node.addresses(),
        tags: node.tags.clone(),
        user: node.user.clone(),
        ephemeral: node.ephemeral,
        wireguard_only: node.wireguard_only,
        online: state.is_online(node.id),
        key_expiry: node.key_expiry,
        expired: node.is_expired(now),
        last_seen: node.last_seen,
        endpoints: node.endpoints.clone(),
        advertised_routes: node.advertised_routes.iter().copied().collect(),
        approved_routes: node.approved_routes.iter().copied().collect(),
        primary_routes: state.primary_routes(node.id).into_iter().collect(),
        standby_routes: health.standby(),
        unhealthy_routes: health.unhealthy(),
        priority: health.priority,
        route_health: health.routes,
    }
}

/// A router's routes as health and primary selection see them.
struct RouterHealth {
    priority: Option<u32>,
    routes: Vec<RouteHealthView>,
}

impl RouterHealth {
    fn of(state: &TailnetState, node: &NodeRecord, now: UnixTime) -> Self {
        let report = state.router_report(node.id);
        let primary = state.primary_routes(node.id);
        let routes = node
            .advertised_routes
            .iter()
            .map(|prefix| {
                let reported = report.and_then(|r| r.health.get(prefix));
                RouteHealthView {
                    prefix: *prefix,
                    healthy: reported.is_none_or(|h| h.healthy),
                    reason: reported.map(|h| h.reason.clone()).unwrap_or_default(),
                    standing: state.route_standing(node.id, prefix, now).map(|s| {
                        match s {
                            Standing::Eligible => "eligible",
                            Standing::HoldDown => "hold_down",
                            Standing::Unhealthy => "unhealthy",
                        }
                        .to_owned()
                    }),
                    primary: primary.contains(prefix),
                }
            })
            .collect();
        Self {
            priority: report.map(|r| r.priority),
            routes,
        }
    }

    fn standby(&self) -> Vec<IpNet> {
        self.routes
            .iter()
            .filter(|r| r.standing.is_some() && !r.primary)
            .map(|r| r.prefix)
            .collect()
    }

    fn unhealthy(&self) -> Vec<IpNet> {
        self.routes
            .iter()
            .filter(|r| !r.healthy)
            .map(|r| r.prefix)
            .collect()
    }
}

async fn list_nodes(_: Admin, State(control): State<Arc<Control>>) -> Json<Vec<NodeView>> {
    let now = unix_now();
    let inner = control.lock();
    Json(
        inner
            .state
            .nodes()
            .map(|n| node_view(&inner.state, n, now))
            .collect(),
    )
}

async fn delete_node(
    _: Admin,
    State(control): State<Arc<Control>>,
    Path(id): Path<String>,
) -> Result<Json<DeletedNode>, ApiError> {
    let id = parse_node_id(&id)?;
    control.apply(
        |state, now| state.delete_node(id, now).map(|c| ((), c)),
        None,
    )?;
    tracing::info!(node = %id, "node deleted");
    Ok(Json(DeletedNode { deleted: id }))
}

async fn expire_node(
    _: Admin,
    State(control): State<Arc<Control>>,
    Path(id): Path<String>,
) -> Result<Json<NodeView>, ApiError> {
    let id = parse_node_id(&id)?;
    control.apply(
        |state, now| state.expire_node(id, now).map(|c| ((), c)),
        None,
    )?;
    tracing::info!(node = %id, "node key expired by admin");
    let inner = control.lock();
    let node = inner
        .state
        .node(id)
        .ok_or_else(|| ApiError::NotFound(format!("no node {id}")))?;
    Ok(Json(node_view(&inner.state, node, unix_now())))
}

// --- routes ---------------------------------------------------------------

fn route_view(state: &TailnetState, node: &NodeRecord, now: UnixTime) -> RouteView {
    let health = RouterHealth::of(state, node, now);
    RouteView {
        node: node.id,
        name: node.name.clone(),
        online: state.is_online(node.id),
        advertised: node.advertised_routes.iter().copied().collect(),
        approved: node.approved_routes.iter().copied().collect(),
        primary: state.primary_routes(node.id).into_iter().collect(),
        standby: health.standby(),
        unhealthy: health.unhealthy(),
        priority: health.priority,
        health: health.routes,
    }
}

async fn list_routes(_: Admin, State(control): State<Arc<Control>>) -> Json<Vec<RouteView>> {
    let now = unix_now();
    let inner = control.lock();
    Json(
        inner
            .state
            .nodes()
            .filter(|n| !n.advertised_routes.is_empty() || !n.approved_routes.is_empty())
            .map(|n| route_view(&inner.state, n, now))
            .collect(),
    )
}

async fn approve_route(
    _: Admin,
    State(control): State<Arc<Control>>,
    body: Bytes,
) -> Result<Json<RouteView>, ApiError> {
    change_route(&control, &body, true)
}

async fn unapprove_route(
    _: Admin,
    State(control): State<Arc<Control>>,
    body: Bytes,
) -> Result<Json<RouteView>, ApiError> {
    change_route(&control, &body, false)
}

fn change_route(
    control: &Control,
    body: &Bytes,
    approve: bool,
) -> Result<Json<RouteView>, ApiError> {
    let req: RouteRequest = parse_body(body)?;
    let prefix = parse_prefix(&req.prefix)?;
    let id = control.lock().state.find_node(&req.node).ok_or_else(|| {
        ApiError::NotFound(format!("no node {:?} (give a node id or name)", req.node))
    })?;
    control.apply(
        |state, now| {
            let changes = if approve {
                state.approve_route(id, prefix, now)
            } else {
                state.unapprove_route(id, prefix, now)
            }?;
            Ok(((), changes))
        },
        None,
    )?;
    tracing::info!(node = %id, %prefix, approve, "route approval changed");
    let inner = control.lock();
    let node = inner
        .state
        .node(id)
        .ok_or_else(|| ApiError::NotFound(format!("no node {id}")))?;
    Ok(Json(route_view(&inner.state, node, unix_now())))
}

// --- split DNS ------------------------------------------------------------

async fn list_split_dns(
    _: Admin,
    State(control): State<Arc<Control>>,
) -> Json<BTreeMap<String, Vec<IpAddr>>> {
    Json(control.lock().state.split_dns().clone())
}

async fn set_split_dns(
    _: Admin,
    State(control): State<Arc<Control>>,
    Path(domain): Path<String>,
    body: Bytes,
) -> Result<Json<SplitDnsEntry>, ApiError> {
    let req: SplitDnsRequest = parse_body(&body)?;
    let resolvers = req
        .resolvers
        .iter()
        .map(|r| {
            r.parse::<IpAddr>().map_err(|_| {
                ApiError::BadRequest(format!(
                    "resolver {r:?} for {domain:?}: expected an IPv4 or IPv6 address"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let name = control.apply(
        |state, now| state.set_split_dns(&domain, resolvers.clone(), now),
        None,
    )?;
    tracing::info!(domain = %name, resolvers = resolvers.len(), "split DNS set");
    Ok(Json(SplitDnsEntry {
        domain: name,
        resolvers,
    }))
}

async fn remove_split_dns(
    _: Admin,
    State(control): State<Arc<Control>>,
    Path(domain): Path<String>,
) -> Result<Json<Done>, ApiError> {
    control.apply(
        |state, now| state.remove_split_dns(&domain, now).map(|c| ((), c)),
        None,
    )?;
    tracing::info!(%domain, "split DNS removed");
    Ok(Json(Done { ok: true }))
}

// --- WireGuard-only devices ----------------------------------------------

async fn add_wireguard_device(
    _: Admin,
    State(control): State<Arc<Control>>,
    body: Bytes,
) -> Result<Json<AddedDevice>, ApiError> {
    let req: AddDeviceRequest = parse_body(&body)?;
    // The private key is handed out once in the config and never stored.
    let private = PrivateKey::from_random_bytes(rand::random());
    let public = private.public_key();
    let id = control.apply(
        |state, now| state.add_wireguard_device_for(&req.name, public, req.user.as_deref(), now),
        None,
    )?;
    tracing::info!(node = %id, "WireGuard-only device added");
    let now = unix_now();
    let inner = control.lock();
    let node = inner
        .state
        .node(id)
        .ok_or_else(|| ApiError::NotFound(format!("no node {id}")))?;
    let config = inner
        .state
        .wg_quick_config(id, &private.to_base64(), now)
        .ok_or_else(|| ApiError::NotFound(format!("no node {id}")))?;
    let view = node_view(&inner.state, node, now);
    Ok(Json(AddedDevice { node: view, config }))
}

// --- policy ---------------------------------------------------------------

async fn get_policy(_: Admin, State(control): State<Arc<Control>>) -> Response {
    let text = control
        .lock()
        .state
        .policy_text()
        .unwrap_or("{}\n")
        .to_owned();
    ([(header::CONTENT_TYPE, "application/hujson")], text).into_response()
}

async fn put_policy(
    _: Admin,
    State(control): State<Arc<Control>>,
    body: Bytes,
) -> Result<Json<Done>, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("policy is not UTF-8 text".into()))?
        .to_owned();
    // Validate first, so the database sees only policies the core accepted.
    causeway_tailnet::Policy::parse(&text).map_err(|e| ApiError::from(AdminError::Policy(e)))?;
    control.apply(
        |state, now| state.set_policy(&text, now).map(|c| ((), c)),
        Some(&text),
    )?;
    tracing::info!("policy replaced");
    Ok(Json(Done { ok: true }))
}
