//! The web UI, on its own listener: the list of sessions with filters
//! (`/`), a session page that plays the recording in asciinema-player
//! (`/sessions/<id>`), the `.cast` download (`/sessions/<id>.cast`) and,
//! for a session still in the spool, a Server-Sent Events stream the player
//! follows live (`/sessions/<id>/events`). Stored recordings are read from
//! the storage backend, sessions in progress from the spool. Parsing,
//! filtering, ordering and paging live in `causeway_recording::catalog`.

pub mod assets;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use askama::Template;
use bytes::Bytes;
use causeway_recording::{
    CastHeader, FilterError, LiveFeedState, SessionFilter, SessionId, SessionSummary,
    complete_prefix_len, format_time, page, sort_sessions,
};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use ipnet::IpNet;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::channel_body::ChannelBody;
use crate::config::WebConfig;
use crate::identity::{Identity, WhoIs, may_view};
use crate::spool::{Spool, SpooledRecording};
use crate::storage::Storage;
use causeway_wire::caps::RECORDER_CAP;

/// The response body type of every UI route.
pub type ResponseBody = BoxBody<Bytes, Infallible>;

/// How much of a recording is read to find its header line.
const HEADER_READ_LIMIT: u64 = 64 * 1024;
/// Header reads in flight at once while listing.
const HEADER_READS_AT_ONCE: usize = 16;
/// How often a live stream looks for new bytes in the spool.
const LIVE_POLL: Duration = Duration::from_millis(200);
/// A comment line this often lets a live stream notice a viewer who left.
const LIVE_KEEPALIVE: Duration = Duration::from_secs(15);
/// How long a live stream waits for a just-created recording's header.
const LIVE_HEADER_WAIT: Duration = Duration::from_secs(5);

/// Only our own scripts and styles, plus the player's WebAssembly terminal.
const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Why a UI request failed; one mapping to a status code.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The source address is outside `web.allow`.
    #[error("source address is not allowed to view recordings")]
    Forbidden,
    /// The `Host` header names neither an IP address nor one of `web.hosts`.
    #[error("{0}")]
    WrongHost(String),
    /// The recorder's node does not know the source as a tailnet node.
    #[error("{0} is not the address of a node of this tailnet")]
    NotANode(IpAddr),
    /// The viewer is a node the policy grants no recorder `view` capability
    /// at this recorder's node.
    #[error(
        "{0} may not view recordings: no grant in the tailnet policy gives it \"{cap}\" with action \"view\" on this recorder",
        cap = RECORDER_CAP
    )]
    NotAViewer(Identity),
    /// No such page or session.
    #[error("not found")]
    NotFound,
    /// Only GET and HEAD are served.
    #[error("method not allowed, use GET")]
    Method,
    /// A list filter does not parse.
    #[error("bad filter: {0}")]
    Filter(#[from] FilterError),
    /// Storage, spool or rendering failed; details are in the log.
    #[error("the recorder could not answer; see its log")]
    Internal(#[source] anyhow::Error),
}

/// Shared state of the UI routes.
#[derive(Debug)]
pub struct Web<S> {
    allow: Vec<IpNet>,
    hosts: Vec<String>,
    /// Identifies viewers when the recorder runs beside a tailnet node.
    who_is: Option<Arc<dyn WhoIs>>,
    storage: Arc<S>,
    spool: Arc<Spool>,
    prefix: String,
}

impl<S: Storage> Web<S> {
    /// Routes reading `storage` (keys under `prefix`) and `spool`; with
    /// `who_is`, only viewers the policy grants the recorder capability
    /// are served.
    pub fn new(
        config: &WebConfig,
        storage: Arc<S>,
        spool: Arc<Spool>,
        prefix: &str,
        who_is: Option<Arc<dyn WhoIs>>,
    ) -> Self {
        Self {
            allow: config.allow.clone(),
            hosts: config
                .hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            who_is,
            storage,
            spool,
            prefix: prefix.to_owned(),
        }
    }

    /// Answers one request from `peer`.
    pub async fn handle(
        self: Arc<Self>,
        peer: SocketAddr,
        req: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, Infallible> {
        let answer = if !self.allowed(peer.ip()) {
            tracing::debug!(%peer, "refused a web UI request from outside the allow-list");
            Err(WebError::Forbidden)
        } else if let Err(e) = self
            .check_host(&req)
            .and_then(|()| self.check_viewer(peer.ip()))
        {
            tracing::debug!(%peer, error = %e, "refused a web UI request");
            Err(e)
        } else if req.method() != Method::GET && req.method() != Method::HEAD {
            Err(WebError::Method)
        } else {
            self.route(req.uri().path(), req.uri().query().unwrap_or(""))
                .await
        };
        Ok(answer.unwrap_or_else(|e| error_response(&e)))
    }

    /// The request's host (the `Host` header, or the authority of an
    /// HTTP/2 or absolute-form request) must be an IP literal or one of
    /// `web.hosts`: a DNS-rebinding page carries its own name.
    fn check_host(&self, req: &Request<Incoming>) -> Result<(), WebError> {
        let named = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<hyper::http::uri::Authority>().ok())
            .or_else(|| req.uri().authority().cloned());
        let Some(authority) = named else {
            return Err(WebError::WrongHost(
                "the request names no host (Host header)".to_owned(),
            ));
        };
        let host = authority.host();
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if literal.parse::<IpAddr>().is_ok() || self.hosts.contains(&host) {
            return Ok(());
        }
        Err(WebError::WrongHost(format!(
            "host {host:?} is not one this recorder answers to: use its address or a name in [recorder.web] hosts"
        )))
    }

    /// With a node beside the recorder, the viewer must be a tailnet node
    /// holding the recorder capability with the `view` action (a policy
    /// grant naming this recorder's node).
    fn check_viewer(&self, ip: IpAddr) -> Result<(), WebError> {
        let Some(who_is) = &self.who_is else {
            return Ok(());
        };
        let ip = ip.to_canonical();
        let who = who_is.who_is(ip).ok_or(WebError::NotANode(ip))?;
        if may_view(&who) {
            Ok(())
        } else {
            Err(WebError::NotAViewer(who))
        }
    }

    fn allowed(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.iter().any(|net| net.contains(&ip))
    }

    async fn route(&self, path: &str, query: &str) -> Result<Response<ResponseBody>, WebError> {
        if path == "/" {
            return self.list(query).await;
        }
        if let Some(name) = path.strip_prefix("/assets/") {
            let asset = assets::get(name).ok_or(WebError::NotFound)?;
            let mut response = bytes_response(asset.content_type, Bytes::from_static(asset.bytes));
            set(&mut response, header::CACHE_CONTROL, "public, max-age=3600");
            return Ok(response);
        }
        let rest = path.strip_prefix("/sessions/").ok_or(WebError::NotFound)?;
        let id = |text: &str| SessionId::parse(text).map_err(|_| WebError::NotFound);
        if let Some(text) = rest.strip_suffix(".cast") {
            return self.download(&id(text)?).await;
        }
        if let Some(text) = rest.strip_suffix("/events") {
            return self.events(&id(text)?).await;
        }
        self.session(&id(rest)?).await
    }

    async fn list(&self, query: &str) -> Result<Response<ResponseBody>, WebError> {
        let filter = SessionFilter::from_query(query, unix_now())?;
        let mut sessions = self.sessions(&filter).await.map_err(WebError::Internal)?;
        sessions.retain(|s| filter.matches(s));
        sort_sessions(&mut sessions);
        let shown = page(&sessions, filter.page);
        let link = |n: usize| {
            let q = filter.query(n);
            if q.is_empty() {
                "/".to_owned()
            } else {
                format!("/?{q}")
            }
        };
        let template = ListPage {
            node: filter.node.as_deref().unwrap_or(""),
            user: filter.user.as_deref().unwrap_or(""),
            from: filter.raw_from(),
            to: filter.raw_to(),
            last: filter.raw_last(),
            total: shown.total,
            page: shown.number,
            pages: shown.pages,
            prev: (shown.number > 1).then(|| link(shown.number - 1)),
            next: (shown.number < shown.pages).then(|| link(shown.number + 1)),
            rows: shown.items.iter().map(Row::new).collect(),
        };
        html(&template)
    }

    async fn session(&self, id: &SessionId) -> Result<Response<ResponseBody>, WebError> {
        let (head, live) = match self.spooled(id).await? {
            Some(recording) => (read_head(&recording.data).await, true),
            None => {
                let key = id.key(&self.prefix);
                let head = self
                    .storage
                    .read(&key, Some(HEADER_READ_LIMIT))
                    .await
                    .with_context(|| format!("reading the header of {key}"))
                    .map_err(WebError::Internal)?
                    .ok_or(WebError::NotFound)?;
                (head, false)
            }
        };
        let summary = SessionSummary::new(id.clone(), first_line(&head), live, 0);
        let header = summary.header.as_ref();
        let field = |f: fn(&CastHeader) -> &str| header.map_or("", f).to_owned();
        let href = format!("/sessions/{id}");
        let template = SessionPage {
            node: display_node(&summary),
            node_id: id.node_id().to_owned(),
            started: format_time(summary.started),
            user: field(|h| &h.src_node_user),
            ssh_user: field(|h| &h.ssh_user),
            local_user: field(|h| &h.local_user),
            command: field(|h| &h.command),
            connection: field(|h| &h.connection_id),
            cols: header.map_or(0, |h| h.width),
            rows: header.map_or(0, |h| h.height),
            live,
            cast_href: format!("{href}.cast"),
            events_href: format!("{href}/events"),
        };
        html(&template)
    }

    async fn download(&self, id: &SessionId) -> Result<Response<ResponseBody>, WebError> {
        let spooled = match self.spooled_file(id).await? {
            Some((mut file, _)) => {
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes)
                    .await
                    .context("reading the spool")
                    .map_err(WebError::Internal)?;
                // A write may be under way: offer complete lines only.
                bytes.truncate(complete_prefix_len(&bytes));
                Some(bytes)
            }
            None => None,
        };
        let bytes = match spooled {
            Some(bytes) => bytes,
            None => {
                let key = id.key(&self.prefix);
                self.storage
                    .read(&key, None)
                    .await
                    .with_context(|| format!("reading {key}"))
                    .map_err(WebError::Internal)?
                    .ok_or(WebError::NotFound)?
            }
        };
        let mut response = bytes_response("application/x-asciicast", Bytes::from(bytes));
        let filename = format!("{}.cast", id.as_str().replace('/', "_"));
        set(
            &mut response,
            header::CONTENT_DISPOSITION,
            &format!("attachment; filename=\"{filename}\""),
        );
        Ok(response)
    }

    async fn events(&self, id: &SessionId) -> Result<Response<ResponseBody>, WebError> {
        let (tx, rx) = mpsc::channel(16);
        match self.spooled_file(id).await? {
            Some((file, recording)) => {
                let key = recording.key.clone();
                tokio::spawn(async move {
                    if let Err(e) = follow(file, recording.data, &tx).await {
                        tracing::debug!(key, error = %format!("{e:#}"), "a live view ended with an error");
                    }
                });
            }
            None => {
                // Stored meanwhile: send it whole, then the end.
                let key = id.key(&self.prefix);
                let bytes = self
                    .storage
                    .read(&key, None)
                    .await
                    .map_err(WebError::Internal)?
                    .ok_or(WebError::NotFound)?;
                let mut feed = LiveFeedState::new();
                feed.handle_bytes(&bytes)
                    .and_then(|()| feed.start())
                    .map_err(|e| WebError::Internal(e.into()))?;
                feed.finish();
                while let Some(message) = feed.poll_message() {
                    let _ = tx.try_send(Bytes::from(message));
                }
            }
        }
        let mut response = Response::new(ChannelBody::new(rx).boxed());
        set(&mut response, header::CONTENT_TYPE, "text/event-stream");
        set(&mut response, header::CACHE_CONTROL, "no-store");
        Ok(response)
    }

    /// The sessions that may pass `filter`: those in the spool (live) and
    /// those in storage, unordered.
    async fn sessions(&self, filter: &SessionFilter) -> anyhow::Result<Vec<SessionSummary>> {
        let mut out = Vec::new();
        let mut live = BTreeSet::new();
        for recording in self.spool.in_progress().await? {
            let Some(id) = SessionId::from_key(&self.prefix, &recording.key) else {
                continue;
            };
            let head = read_head(&recording.data).await;
            live.insert(id.clone());
            out.push(SessionSummary::new(
                id,
                first_line(&head),
                true,
                recording.len,
            ));
        }
        let listed = self
            .storage
            .list(&SessionId::key_prefix(&self.prefix))
            .await
            .context("listing stored recordings")?;
        // Header reads go out a few at a time: one request each on S3.
        let mut reads = tokio::task::JoinSet::new();
        for object in listed {
            let Some(id) = SessionId::from_key(&self.prefix, &object.key) else {
                continue;
            };
            // The key's start time is the header's: skip reads the filter would drop.
            if live.contains(&id) || id.started().is_some_and(|t| !filter.matches_start(t)) {
                continue;
            }
            if reads.len() >= HEADER_READS_AT_ONCE
                && let Some(done) = reads.join_next().await
            {
                out.extend(done.context("reading a header")?);
            }
            let storage = Arc::clone(&self.storage);
            reads.spawn(async move {
                let head = match storage.read(&object.key, Some(HEADER_READ_LIMIT)).await {
                    Ok(Some(head)) => head,
                    // Deleted between list and read (retention): skip it.
                    Ok(None) => return None,
                    // An object in an archive tier cannot be read until
                    // restored; list it with what its key tells.
                    Err(e) => {
                        tracing::debug!(key = %object.key, error = %format!("{e:#}"), "listing a recording without its header");
                        Vec::new()
                    }
                };
                Some(SessionSummary::new(id, first_line(&head), false, object.bytes))
            });
        }
        while let Some(done) = reads.join_next().await {
            out.extend(done.context("reading a header")?);
        }
        Ok(out)
    }

    /// The session's spool file, opened, if it is in the spool; `None` also
    /// when it left the spool just now (it is in storage then).
    async fn spooled_file(
        &self,
        id: &SessionId,
    ) -> Result<Option<(tokio::fs::File, SpooledRecording)>, WebError> {
        let Some(recording) = self.spooled(id).await? else {
            return Ok(None);
        };
        match tokio::fs::File::open(&recording.data).await {
            Ok(file) => Ok(Some((file, recording))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(WebError::Internal(e.into())),
        }
    }

    /// The session's recording if it is in the spool.
    async fn spooled(&self, id: &SessionId) -> Result<Option<SpooledRecording>, WebError> {
        let key = id.key(&self.prefix);
        let spooled = self.spool.in_progress().await.map_err(WebError::Internal)?;
        Ok(spooled.into_iter().find(|r| r.key == key))
    }
}

/// Streams a spooled recording as it grows, until it leaves the spool
/// (stored) or the viewer goes away.
async fn follow(
    mut file: tokio::fs::File,
    path: PathBuf,
    tx: &mpsc::Sender<Bytes>,
) -> anyhow::Result<()> {
    let mut feed = LiveFeedState::new();
    let mut buf = vec![0u8; 64 * 1024];
    let waited = tokio::time::Instant::now();
    loop {
        read_into(&mut file, &mut buf, &mut feed).await?;
        match feed.start() {
            Ok(()) => break,
            Err(e) if waited.elapsed() > LIVE_HEADER_WAIT => return Err(e.into()),
            Err(_) => tokio::time::sleep(LIVE_POLL).await,
        }
    }
    let mut quiet = tokio::time::Instant::now();
    loop {
        while let Some(message) = feed.poll_message() {
            if tx.send(Bytes::from(message)).await.is_err() {
                return Ok(());
            }
            quiet = tokio::time::Instant::now();
        }
        // Check first, then read: bytes written before the removal are still read.
        let stored = !tokio::fs::try_exists(&path).await.unwrap_or(false);
        let read = read_into(&mut file, &mut buf, &mut feed).await?;
        if stored && read == 0 {
            feed.finish();
            while let Some(message) = feed.poll_message() {
                let _ = tx.send(Bytes::from(message)).await;
            }
            return Ok(());
        }
        if read == 0 {
            if quiet.elapsed() >= LIVE_KEEPALIVE {
                if tx
                    .send(Bytes::from_static(b": keep-alive\n\n"))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
                quiet = tokio::time::Instant::now();
            }
            tokio::time::sleep(LIVE_POLL).await;
        }
    }
}

/// Reads what the file has now into the feed; returns the byte count.
async fn read_into(
    file: &mut tokio::fs::File,
    buf: &mut [u8],
    feed: &mut LiveFeedState,
) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let n = file.read(buf).await.context("reading the spool")?;
        if n == 0 {
            return Ok(total);
        }
        feed.handle_bytes(&buf[..n])?;
        total += n;
    }
}

/// The first `HEADER_READ_LIMIT` bytes of a spooled file (empty if it is gone).
async fn read_head(path: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(file) = tokio::fs::File::open(path).await {
        let _ = file.take(HEADER_READ_LIMIT).read_to_end(&mut out).await;
    }
    out
}

fn first_line(bytes: &[u8]) -> Option<&[u8]> {
    bytes
        .iter()
        .position(|b| *b == b'\n')
        .map(|nl| &bytes[..nl])
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn display_node(s: &SessionSummary) -> String {
    match &s.header {
        Some(h) if !h.src_node.is_empty() => h.src_node.trim_end_matches('.').to_owned(),
        _ => s.id.node_id().to_owned(),
    }
}

fn display_size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

#[derive(Template)]
#[template(path = "list.html")]
struct ListPage<'a> {
    node: &'a str,
    user: &'a str,
    from: &'a str,
    to: &'a str,
    last: &'a str,
    total: usize,
    page: usize,
    pages: usize,
    prev: Option<String>,
    next: Option<String>,
    rows: Vec<Row>,
}

struct Row {
    id: String,
    href: String,
    started: String,
    node: String,
    node_id: String,
    user: String,
    ssh_user: String,
    local_user: String,
    size: String,
    live: bool,
}

impl Row {
    fn new(s: &SessionSummary) -> Self {
        let h = s.header.as_ref();
        Self {
            id: s.id.to_string(),
            href: format!("/sessions/{}", s.id),
            started: format_time(s.started),
            node: display_node(s),
            node_id: s.id.node_id().to_owned(),
            user: h.map_or_else(String::new, |h| h.src_node_user.clone()),
            ssh_user: h.map_or_else(String::new, |h| h.ssh_user.clone()),
            local_user: h.map_or_else(String::new, |h| h.local_user.clone()),
            size: display_size(s.bytes),
            live: s.live,
        }
    }
}

#[derive(Template)]
#[template(path = "session.html")]
struct SessionPage {
    node: String,
    node_id: String,
    started: String,
    user: String,
    ssh_user: String,
    local_user: String,
    command: String,
    connection: String,
    cols: u32,
    rows: u32,
    live: bool,
    cast_href: String,
    events_href: String,
}

fn html(template: &impl Template) -> Result<Response<ResponseBody>, WebError> {
    let page = template
        .render()
        .context("rendering a page")
        .map_err(WebError::Internal)?;
    let mut response = bytes_response("text/html; charset=utf-8", Bytes::from(page));
    set(&mut response, header::CACHE_CONTROL, "no-store");
    set(&mut response, header::CONTENT_SECURITY_POLICY, CSP);
    Ok(response)
}

fn error_response(e: &WebError) -> Response<ResponseBody> {
    let status = match e {
        WebError::Forbidden
        | WebError::WrongHost(_)
        | WebError::NotANode(_)
        | WebError::NotAViewer(_) => StatusCode::FORBIDDEN,
        WebError::NotFound => StatusCode::NOT_FOUND,
        WebError::Method => StatusCode::METHOD_NOT_ALLOWED,
        WebError::Filter(_) => StatusCode::BAD_REQUEST,
        WebError::Internal(inner) => {
            tracing::warn!(error = %format!("{inner:#}"), "a web UI request failed");
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    let mut response = bytes_response("text/plain; charset=utf-8", Bytes::from(format!("{e}\n")));
    *response.status_mut() = status;
    response
}

fn bytes_response(content_type: &'static str, body: Bytes) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(body).boxed());
    set(&mut response, header::CONTENT_TYPE, content_type);
    set(&mut response, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    response
}

fn set(response: &mut Response<ResponseBody>, name: header::HeaderName, value: &str) {
    // Every value here is ASCII we built; an unencodable one is left out, not sent broken.
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_recorded_names() {
        let row = Row {
            id: "n/20231114T221320Z-c".to_owned(),
            href: "/sessions/n/20231114T221320Z-c".to_owned(),
            started: "2023-11-14 22:13:20 UTC".to_owned(),
            node: "<script>alert(1)</script>".to_owned(),
            node_id: "n".to_owned(),
            user: "\"><img src=x onerror=alert(1)>".to_owned(),
            ssh_user: "a&b".to_owned(),
            local_user: String::new(),
            size: "1 B".to_owned(),
            live: false,
        };
        let page = ListPage {
            node: "\"><b>",
            user: "",
            from: "",
            to: "",
            last: "",
            total: 1,
            page: 1,
            pages: 1,
            prev: None,
            next: None,
            rows: vec![row],
        }
        .render()
        .expect("renders");
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(
            page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{page}"
        );
        assert!(!page.contains("<img src=x"), "{page}");
        assert!(page.contains("a&#38;b"), "{page}");
        assert!(!page.contains("\"><b>"), "{page}");
    }

    #[test]
    fn sizes_read_like_sizes() {
        assert_eq!(display_size(999), "999 B");
        assert_eq!(display_size(1536), "1.5 KiB");
        assert_eq!(display_size(3 * 1_048_576), "3.0 MiB");
    }
}
