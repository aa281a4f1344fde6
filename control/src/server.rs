//! The running control server: shared state, write-through persistence,
//! change fan-out and background timers.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use causeway_tailnet::{ChangeSet, NodeRecord, PreparedChange, SessionId, TailnetState};
use causeway_wire::{NodeId, PrivateKey, UnixTime};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{broadcast, mpsc, watch};

use crate::config::ControlConfig;
use crate::init::{init, read_admin_token, read_control_key};
use crate::store::Store;
use crate::{admin_api, node_api};

/// How many change sets a slow stream may fall behind before it gets a
/// fresh full map instead.
const CHANGE_BACKLOG: usize = 1024;
/// How often node key expiry is checked.
const EXPIRY_SWEEP: Duration = Duration::from_secs(5);
/// How long shutdown waits for open streams to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Already-bound listeners, for callers (tests) that bind port 0.
#[derive(Debug)]
pub struct Listeners {
    /// Node-facing listener.
    pub node: TcpListener,
    /// Admin API listener.
    pub admin: TcpListener,
    /// STUN socket, if STUN is on.
    pub stun: Option<UdpSocket>,
}

/// Runs control on `config.listen` and `config.admin_listen` until
/// `shutdown` completes. Initialises the state directory if needed.
pub async fn serve(
    config: ControlConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let node = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding control listener {}", config.listen))?;
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("binding admin listener {}", config.admin_listen))?;
    let stun = match config.stun_port {
        0 => None,
        port => {
            let address = std::net::SocketAddr::new(config.listen.ip(), port);
            Some(
                UdpSocket::bind(address)
                    .await
                    .with_context(|| format!("binding the STUN port {address} (stun_port)"))?,
            )
        }
    };
    serve_on(config, Listeners { node, admin, stun }, shutdown).await
}

/// Like [`serve`], on listeners the caller bound.
pub async fn serve_on(
    config: ControlConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    config.validate()?;
    let state_dir = config.state_dir.clone();
    let init = init(&state_dir)?;
    let control_key = read_control_key(&state_dir)?;
    let admin_token = read_admin_token(&state_dir)?;
    let mut store = Store::open(&state_dir)?;
    let now = unix_now();
    let mut state = store.load(now)?;
    state.set_route_hold_down(config.route_hold_down.as_secs());
    if let Some(path) = &config.policy_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading policy file {}", path.display()))?;
        let changes = state
            .set_policy(&text, now)
            .with_context(|| format!("policy file {}", path.display()))?;
        store.persist(&state, &changes, Some(&text))?;
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (sessions_tx, mut sessions_rx) = mpsc::channel::<()>(1);
    let (changes, _) = broadcast::channel(CHANGE_BACKLOG);
    let (route_wakeup, route_wakeup_rx) = watch::channel(state.route_wakeup());
    let ephemeral: Vec<NodeId> = state
        .nodes()
        .filter(|n| n.ephemeral)
        .map(|n| n.id)
        .collect();
    let stun_port = listeners
        .stun
        .as_ref()
        .and_then(|s| s.local_addr().ok())
        .map(|a| a.port());
    let control = Arc::new(Control {
        inner: Mutex::new(Inner { state, store }),
        changes,
        route_wakeup,
        stun_port,
        config,
        control_key,
        admin_token,
        shutdown: shutdown_rx,
        sessions: sessions_tx,
    });
    // Ephemeral nodes that were offline when control stopped get the same
    // grace as if their stream had just closed.
    for id in ephemeral {
        control.schedule_ephemeral_removal(id, None);
    }
    let sweeper = tokio::spawn(expiry_sweeper(Arc::clone(&control)));
    let route_timer = tokio::spawn(route_timer(Arc::clone(&control), route_wakeup_rx));
    let node_addr = listeners.node.local_addr().ok();
    let admin_addr = listeners.admin.local_addr().ok();
    let stun_task = listeners
        .stun
        .map(|socket| tokio::spawn(crate::stun::serve(socket, control.shutdown.clone())));
    tracing::info!(
        event = "control_ready",
        listen = ?node_addr,
        admin_listen = ?admin_addr,
        stun_port = ?stun_port,
        public_key = %init.public_key,
        "control serving"
    );
    let admin_server = axum::serve(listeners.admin, admin_api::router(Arc::clone(&control)))
        .with_graceful_shutdown(wait_for(control.shutdown.clone()));
    let node_task = tokio::spawn(node_api::serve(listeners.node, Arc::clone(&control)));
    let admin_task = tokio::spawn(async move { admin_server.await });
    shutdown.await;
    tracing::info!("control shutting down");
    // No receiver left only means nobody listens for shutdown any more.
    let _ = shutdown_tx.send(true);
    sweeper.abort();
    route_timer.abort();
    if let Some(task) = stun_task {
        task.abort();
    }
    node_task.await.context("node listener task")?;
    let admin_result = admin_task.await.context("admin listener task")?;
    drop(control);
    // Every stream holds a sender; recv() returns None once all are gone.
    if tokio::time::timeout(SHUTDOWN_GRACE, sessions_rx.recv())
        .await
        .is_err()
    {
        tracing::warn!("map streams still open after shutdown grace");
    }
    admin_result.context("admin listener")?;
    Ok(())
}

/// Seconds since the Unix epoch, from the system clock (the one place the
/// server reads it).
pub(crate) fn unix_now() -> UnixTime {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// State shared by every connection.
pub(crate) struct Control {
    inner: Mutex<Inner>,
    changes: broadcast::Sender<Arc<PreparedChange>>,
    /// When the next route hold-down ends, as of the last operation.
    route_wakeup: watch::Sender<Option<UnixTime>>,
    /// The STUN port nodes are told about in their full maps.
    pub(crate) stun_port: Option<u16>,
    pub(crate) config: ControlConfig,
    pub(crate) control_key: PrivateKey,
    pub(crate) admin_token: String,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) sessions: mpsc::Sender<()>,
}

pub(crate) struct Inner {
    pub(crate) state: TailnetState,
    store: Store,
}

/// An operation was refused, or its result could not be stored.
#[derive(Debug)]
pub(crate) enum ApplyError<E> {
    /// The core refused; nothing changed.
    Refused(E),
    /// Storage failed; the in-memory state was reloaded from the database.
    Storage(anyhow::Error),
}

impl Control {
    /// Locks the state for reading.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the state as the last
        // committed operation left it; keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs one operation on the tailnet: mutate, write through to the
    /// database, fan the change out. `after` runs under the same lock once
    /// the change is broadcast (streams use it to subscribe and take their
    /// full map with no change in between).
    pub(crate) fn apply<T, E>(
        &self,
        op: impl FnOnce(&mut TailnetState, UnixTime) -> Result<(T, ChangeSet), E>,
        policy_text: Option<&str>,
    ) -> Result<T, ApplyError<E>> {
        let mut inner = self.lock();
        self.apply_locked(&mut inner, op, policy_text)
    }

    pub(crate) fn apply_locked<T, E>(
        &self,
        inner: &mut Inner,
        op: impl FnOnce(&mut TailnetState, UnixTime) -> Result<(T, ChangeSet), E>,
        policy_text: Option<&str>,
    ) -> Result<T, ApplyError<E>> {
        let now = unix_now();
        let (value, changes) = op(&mut inner.state, now).map_err(ApplyError::Refused)?;
        let wakeup = inner.state.route_wakeup();
        self.route_wakeup.send_if_modified(|w| {
            let changed = *w != wakeup;
            *w = wakeup;
            changed
        });
        if changes.is_empty() && policy_text.is_none() {
            return Ok(value);
        }
        if let Err(e) = inner.store.persist(&inner.state, &changes, policy_text) {
            tracing::error!(error = %format!("{e:#}"), "storing a change failed; reloading state from the database");
            match inner.store.load(now) {
                Ok(mut state) => {
                    state.set_route_hold_down(self.config.route_hold_down.as_secs());
                    inner.state = state;
                }
                Err(reload) => {
                    tracing::error!(error = %format!("{reload:#}"), "reloading state failed")
                }
            }
            return Err(ApplyError::Storage(e));
        }
        self.publish(&inner.state, &changes, now);
        Ok(value)
    }

    /// Sends a change to every open stream.
    fn publish(&self, state: &TailnetState, changes: &ChangeSet, now: UnixTime) {
        if !changes.announces() {
            return;
        }
        // Views are computed once here, then shared by every stream.
        let prepared = Arc::new(PreparedChange::new(state, changes, now));
        // An error only means no stream is open.
        let _ = self.changes.send(prepared);
    }

    /// A receiver of future changes; call under the lock before taking a
    /// full map so that no change falls between the two.
    pub(crate) fn subscribe(&self, _locked: &Inner) -> broadcast::Receiver<Arc<PreparedChange>> {
        self.changes.subscribe()
    }

    /// After a stream ended: deletes the node after the grace period if it
    /// is ephemeral and has not come back.
    pub(crate) fn schedule_ephemeral_removal(
        self: &Arc<Self>,
        id: NodeId,
        last_session: Option<SessionId>,
    ) {
        let control = Arc::clone(self);
        let grace = control.config.ephemeral_grace;
        let mut shutdown = control.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(grace) => {}
                () = stopped(&mut shutdown) => return,
            }
            let removed = control.apply(
                |state, now| {
                    Ok::<_, std::convert::Infallible>((
                        (),
                        state.remove_ephemeral_if_idle(id, last_session, now),
                    ))
                },
                None,
            );
            if let Err(ApplyError::Storage(e)) = removed {
                tracing::warn!(node = %id, error = %format!("{e:#}"), "removing ephemeral node failed");
            }
        });
    }

    /// A node's record, cloned.
    pub(crate) fn node(&self, id: NodeId) -> Option<NodeRecord> {
        self.lock().state.node(id).cloned()
    }
}

async fn expiry_sweeper(control: Arc<Control>) {
    let mut tick = tokio::time::interval(EXPIRY_SWEEP);
    loop {
        tick.tick().await;
        let result = control.apply(
            |state, now| Ok::<_, std::convert::Infallible>(((), state.expire_due(now))),
            None,
        );
        if let Err(ApplyError::Storage(e)) = result {
            tracing::warn!(error = %format!("{e:#}"), "node key expiry sweep failed");
        }
    }
}

/// Runs primary selection again when a route hold-down ends: a router that
/// has now been healthy long enough may take a route from an unhealthy
/// primary. Sleeps until the time the last operation left, or until an
/// operation changes it.
async fn route_timer(control: Arc<Control>, mut wakeup: watch::Receiver<Option<UnixTime>>) {
    loop {
        let due = *wakeup.borrow_and_update();
        let sleep = async {
            match due {
                // Whole seconds from a truncated "now" never wake early.
                Some(at) => {
                    let wait = u64::try_from(at.saturating_sub(unix_now())).unwrap_or(0);
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = sleep => {
                let result = control.apply(
                    |state, now| Ok::<_, std::convert::Infallible>(((), state.reselect_routes(now))),
                    None,
                );
                if let Err(ApplyError::Storage(e)) = result {
                    tracing::warn!(error = %format!("{e:#}"), "route reselection failed");
                }
                // Nothing moved and nothing new is due: wait for a change.
                if *wakeup.borrow() == due && wakeup.changed().await.is_err() {
                    return;
                }
            }
            changed = wakeup.changed() => if changed.is_err() { return },
        }
    }
}

async fn wait_for(mut shutdown: watch::Receiver<bool>) {
    stopped(&mut shutdown).await;
}

/// Completes once shutdown was requested (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send: drop it here. An error means
    // the sender is gone, which also means stop.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}
