//! The client side of the session-recording protocol over cleartext HTTP/2
//! (h2c, prior knowledge): `HEAD /v2/record` to see that the recorder speaks
//! acks, then one streaming `POST /v2/record` whose response streams
//! `{"ack":N}` lines back.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use causeway_recording::ingest::AckFrame;
use causeway_recording::producer::parse_reply;
use http_body_util::{BodyExt, Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::channel_body::ChannelBody;

/// Where the recorder listens: `http://HOST[:PORT]` (port 80 by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecorderUrl {
    host: String,
    port: u16,
}

/// A `--recorder` value that is not a recorder URL.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{input}` is not a recorder URL: {reason}; expected http://HOST[:PORT]")]
pub struct RecorderUrlError {
    input: String,
    reason: &'static str,
}

impl FromStr for RecorderUrl {
    type Err = RecorderUrlError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason| RecorderUrlError {
            input: input.to_owned(),
            reason,
        };
        let uri: Uri = input
            .parse()
            .map_err(|_| fail("it does not parse as a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(fail(
                    "https is not spoken, the recorder serves cleartext HTTP/2 on the tailnet",
                ));
            }
            Some(_) => return Err(fail("the scheme is not http")),
            None => return Err(fail("the scheme is missing")),
        }
        let Some(authority) = uri.authority() else {
            return Err(fail("the host is missing"));
        };
        if authority.as_str().contains('@') {
            return Err(fail("user information is not supported"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(fail(
                "it has a path or query; the recorder's paths are fixed",
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(fail("the host is empty"));
        }
        // `Uri` takes any digits as a port; what follows the host must fit in a u16.
        let after_host = authority
            .as_str()
            .get(authority.host().len()..)
            .unwrap_or("");
        let port = match after_host.strip_prefix(':') {
            None if after_host.is_empty() => 80,
            Some(digits) => match digits.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(fail("the port is not a number from 1 to 65535")),
            },
            None => return Err(fail("the host is followed by something that is not a port")),
        };
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl RecorderUrl {
    /// `HOST:PORT` as a `Host` header carries it.
    fn authority(&self) -> String {
        let url = self.to_string();
        url.trim_start_matches("http://").to_owned()
    }
}

impl fmt::Display for RecorderUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}", self.host, self.port)
        }
    }
}

/// Why a recording could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No TCP connection within the timeout.
    #[error("connecting to {url} timed out after {timeout:?}")]
    ConnectTimeout {
        /// The recorder.
        url: RecorderUrl,
        /// The connect timeout.
        timeout: Duration,
    },
    /// The TCP connection failed.
    #[error("connecting to {url} failed: {source}")]
    Connect {
        /// The recorder.
        url: RecorderUrl,
        /// What the socket said.
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("{url} failed {request}: {source}")]
    Http {
        /// The recorder.
        url: RecorderUrl,
        /// The request, e.g. `HEAD /v2/record`.
        request: &'static str,
        /// What hyper said.
        source: hyper::Error,
    },
    /// The recorder answered, but not with 200 (or 100 Continue for `/record`).
    #[error("{url} answered {request} with {status}{detail}")]
    Status {
        /// The recorder.
        url: RecorderUrl,
        /// The request, e.g. `HEAD /v2/record`.
        request: &'static str,
        /// Its status.
        status: StatusCode,
        /// Its reason text, prefixed with ": ", if it sent one.
        detail: String,
    },
    /// The recorder did not answer in time.
    #[error("{url} did not answer {request} within {timeout:?}")]
    AnswerTimeout {
        /// The recorder.
        url: RecorderUrl,
        /// The request, e.g. `HEAD /v2/record`.
        request: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// The recorder answered `/record` with a refusal before `100 Continue`.
    #[error("{url} refused the recording: {detail}")]
    Refused {
        /// The recorder.
        url: RecorderUrl,
        /// What it said.
        detail: String,
    },
    /// Neither protocol worked: `/v2/record` over h2c, then `/record` over HTTP/1.1.
    #[error("{v2}; then over HTTP/1.1: {v1}")]
    Fallback {
        /// Why `/v2/record` failed.
        v2: Box<OpenError>,
        /// Why `/record` failed.
        v1: Box<OpenError>,
    },
}

const HEAD_V2: &str = "HEAD /v2/record";
const POST_V2: &str = "POST /v2/record";
const POST_V1: &str = "POST /record";

/// What the recorder's reply stream says.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// An ack or error frame.
    Frame(AckFrame),
    /// The reply stream ended.
    Ended,
    /// The reply stream broke or carried something that is not a frame.
    Broken(String),
}

/// An open recording: the request body to write the recording into and
/// the recorder's replies.
#[derive(Debug)]
pub struct Upload {
    /// Bytes of the recording, in order; dropping it ends the request body.
    pub body: mpsc::Sender<Bytes>,
    /// Reply frames as they arrive.
    pub replies: mpsc::Receiver<Reply>,
    /// Whether the recorder acks (`/v2/record`); `/record` has no acks,
    /// only a final status, which arrives as [`Reply::Ended`] or an error frame.
    pub acks: bool,
}

type RequestBody = Either<Empty<Bytes>, ChannelBody>;

/// Opens a recording at `url`: `HEAD /v2/record` over h2c, then a
/// streaming `POST /v2/record`. A recorder that answers the connection but
/// not the `HEAD` with 200 over HTTP/2 gets `POST /record` over HTTP/1.1
/// (`Expect: 100-continue`, no acks), as Tailscale's client does.
pub async fn open(url: &RecorderUrl, timeout: Duration) -> Result<Upload, OpenError> {
    let sender = match probe_v2(url, timeout).await {
        Ok(sender) => sender,
        Err(e @ (OpenError::Connect { .. } | OpenError::ConnectTimeout { .. })) => return Err(e),
        Err(v2) => {
            tracing::debug!(%url, error = %v2, "no /v2/record; trying /record over HTTP/1.1");
            return open_v1(url, timeout)
                .await
                .map_err(|v1| OpenError::Fallback {
                    v2: Box::new(v2),
                    v1: Box::new(v1),
                });
        }
    };
    open_v2(url, timeout, sender).await
}

async fn connect(url: &RecorderUrl, timeout: Duration) -> Result<TokioIo<TcpStream>, OpenError> {
    let connect = TcpStream::connect((url.host.as_str(), url.port));
    let stream = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| OpenError::ConnectTimeout {
            url: url.clone(),
            timeout,
        })?
        .map_err(|source| OpenError::Connect {
            url: url.clone(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    Ok(TokioIo::new(stream))
}

/// Connects over h2c and checks that `HEAD /v2/record` answers 200.
async fn probe_v2(
    url: &RecorderUrl,
    timeout: Duration,
) -> Result<SendRequest<RequestBody>, OpenError> {
    let io = connect(url, timeout).await?;
    let handshake = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        // Notice a recorder that vanished without closing the connection.
        .keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .handshake::<_, RequestBody>(io);
    let (mut sender, connection) = answered(url, HEAD_V2, timeout, handshake).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "recorder connection ended with an error");
        }
    });
    let head = Request::builder()
        .method(Method::HEAD)
        .uri(format!("{url}/v2/record"))
        .body(Either::Left(Empty::new()))
        .expect("a fixed method and a validated URL make a valid request");
    let answer = answered(url, HEAD_V2, timeout, sender.send_request(head)).await?;
    drop(check_status(url, HEAD_V2, answer).await?);
    Ok(sender)
}

/// `POST /v2/record` on a connection that passed the probe.
async fn open_v2(
    url: &RecorderUrl,
    timeout: Duration,
    mut sender: SendRequest<RequestBody>,
) -> Result<Upload, OpenError> {
    let (body, rx) = mpsc::channel(64);
    let post = Request::builder()
        .method(Method::POST)
        .uri(format!("{url}/v2/record"))
        .header(hyper::header::CONTENT_TYPE, "application/x-asciicast")
        .body(Either::Right(ChannelBody::new(rx)))
        .expect("a fixed method and a validated URL make a valid request");
    let answer = answered(url, POST_V2, timeout, sender.send_request(post)).await?;
    let response = check_status(url, POST_V2, answer).await?;
    let (tx, replies) = mpsc::channel(16);
    tokio::spawn(read_replies(response, tx, sender));
    Ok(Upload {
        body,
        replies,
        acks: true,
    })
}

/// `POST /record` over HTTP/1.1: open once the recorder sent `100 Continue`.
async fn open_v1(url: &RecorderUrl, timeout: Duration) -> Result<Upload, OpenError> {
    let io = connect(url, timeout).await?;
    let (mut sender, connection) = answered(
        url,
        POST_V1,
        timeout,
        hyper::client::conn::http1::handshake::<_, RequestBody>(io),
    )
    .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "recorder connection ended with an error");
        }
    });
    let (body, rx) = mpsc::channel(64);
    let mut post = Request::builder()
        .method(Method::POST)
        .uri("/record")
        .header(hyper::header::HOST, url.authority())
        .header(hyper::header::EXPECT, "100-continue")
        .header(hyper::header::CONTENT_TYPE, "application/x-asciicast")
        .body(Either::Right(ChannelBody::new(rx)))
        .expect("a fixed method and a validated URL make a valid request");
    let (continued_tx, continued) = oneshot::channel();
    let continued_tx = std::sync::Mutex::new(Some(continued_tx));
    hyper::ext::on_informational(&mut post, move |response| {
        if response.status() == StatusCode::CONTINUE
            && let Ok(mut tx) = continued_tx.lock()
            && let Some(tx) = tx.take()
        {
            let _ = tx.send(());
        }
    });
    let (tx, mut replies) = mpsc::channel(16);
    let owner = url.clone();
    tokio::spawn(async move {
        // The only reply of /record: its final status, once the body ended.
        let reply = match sender.send_request(post).await {
            Ok(r) if r.status() == StatusCode::OK => Reply::Ended,
            Ok(r) => match check_status(&owner, POST_V1, r).await {
                Ok(_) => Reply::Ended,
                Err(e) => Reply::Frame(AckFrame::Error(e.to_string())),
            },
            Err(e) => Reply::Broken(format!("{POST_V1} failed: {e}")),
        };
        let _ = tx.send(reply).await;
    });
    let early = tokio::select! {
        // The sender is dropped, unsent, when the request ends without a 100.
        Ok(()) = continued => None,
        reply = replies.recv() => Some(reply),
        () = tokio::time::sleep(timeout) => {
            return Err(OpenError::AnswerTimeout { url: url.clone(), request: POST_V1, timeout });
        }
    };
    match early {
        None => Ok(Upload {
            body,
            replies,
            acks: false,
        }),
        // An answer before 100 Continue is a refusal (or a broken connection).
        Some(Some(Reply::Frame(AckFrame::Error(e)) | Reply::Broken(e))) => {
            Err(OpenError::Refused {
                url: url.clone(),
                detail: e,
            })
        }
        Some(_) => Err(OpenError::Refused {
            url: url.clone(),
            detail: format!("{POST_V1} ended before the recording began"),
        }),
    }
}

/// Awaits a step of the exchange with the recorder, at most `timeout`.
async fn answered<T>(
    url: &RecorderUrl,
    request: &'static str,
    timeout: Duration,
    step: impl Future<Output = Result<T, hyper::Error>>,
) -> Result<T, OpenError> {
    tokio::time::timeout(timeout, step)
        .await
        .map_err(|_| OpenError::AnswerTimeout {
            url: url.clone(),
            request,
            timeout,
        })?
        .map_err(|source| OpenError::Http {
            url: url.clone(),
            request,
            source,
        })
}

/// Passes a 200 on; turns anything else into an error with the recorder's reason.
async fn check_status(
    url: &RecorderUrl,
    request: &'static str,
    response: hyper::Response<Incoming>,
) -> Result<Incoming, OpenError> {
    let status = response.status();
    if status == StatusCode::OK {
        return Ok(response.into_body());
    }
    // The recorder's refusals (403, 404, 405) carry a one-line reason.
    let reason = tokio::time::timeout(Duration::from_secs(2), response.into_body().collect())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| {
            String::from_utf8_lossy(&b.to_bytes())
                .trim()
                .chars()
                .take(200)
                .collect::<String>()
        })
        .unwrap_or_default();
    Err(OpenError::Status {
        url: url.clone(),
        request,
        status,
        detail: if reason.is_empty() {
            String::new()
        } else {
            format!(": {reason}")
        },
    })
}

/// Cuts the response into reply lines; ends after an error frame, the end
/// of the stream or a broken one.
async fn read_replies(
    mut response: Incoming,
    tx: mpsc::Sender<Reply>,
    // Held so the connection stays up as long as replies are read.
    _sender: SendRequest<RequestBody>,
) {
    let mut pending = Vec::new();
    loop {
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            let reply = match parse_reply(&line[..nl]) {
                Ok(frame) => Reply::Frame(frame),
                Err(e) => Reply::Broken(e.to_string()),
            };
            let last = !matches!(reply, Reply::Frame(AckFrame::Ack(_)));
            if tx.send(reply).await.is_err() || last {
                return;
            }
        }
        let reply = match response.frame().await {
            None => Reply::Ended,
            Some(Err(e)) => Reply::Broken(format!("the reply stream broke: {e}")),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    pending.extend_from_slice(&data);
                }
                continue;
            }
        };
        let _ = tx.send(reply).await;
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_recorder_urls() {
        let url: RecorderUrl = "http://100.64.0.5".parse().expect("valid");
        assert_eq!(url.to_string(), "http://100.64.0.5:80");
        let url: RecorderUrl = "http://recorder.internal:8080/".parse().expect("valid");
        assert_eq!(url.to_string(), "http://recorder.internal:8080");
        let url: RecorderUrl = "http://[fd7a:115c:a1e0::5]:81".parse().expect("valid");
        assert_eq!(url.to_string(), "http://[fd7a:115c:a1e0::5]:81");
    }

    #[test]
    fn refuses_what_is_not_a_recorder_url() {
        for (input, reason) in [
            ("recorder:80", "the scheme is"),
            ("ftp://rec", "the scheme is not http"),
            ("https://rec", "https is not spoken"),
            ("http://rec/v2/record", "it has a path or query"),
            ("http://user@rec", "user information"),
            ("http://rec:99999", "the port is not a number"),
            ("http://rec:0", "the port is not a number"),
            ("", "it does not parse"),
        ] {
            let err = input.parse::<RecorderUrl>().expect_err(input).to_string();
            assert!(err.contains(reason), "{input}: {err}");
            assert!(
                err.contains(&format!("`{input}`")),
                "names the input: {err}"
            );
        }
    }
}
