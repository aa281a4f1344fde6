//! The bits of control's admin API the AWS provisioner uses
//! (docs/reference/admin-api.md): minting an auth key for a role (and
//! revoking it once the instances joined), asking what control knows of
//! each node (health, which router is primary), and registering split DNS.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use causeway_wire::admin::{CreateKeyRequest, CreatedKey, KeyView, SplitDnsEntry, SplitDnsRequest};
use serde::de::DeserializeOwned;
use serde_json::to_value;

/// An auth key. Never printed: `Debug` and `Display` show only a marker.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey(String);

impl AuthKey {
    /// Reads a key from a file (`--auth-key-file`), trimmed; empty is refused.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--auth-key-file {}: reading it", path.display()))?;
        let key = text.trim();
        if key.is_empty() {
            anyhow::bail!("--auth-key-file {}: the file is empty", path.display());
        }
        Ok(Self(key.to_owned()))
    }

    /// The key, for storing it in Secrets Manager only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Control's public id of the key (`cwk_<id>_<secret>`), if it is one
    /// control issued; the id is not secret.
    pub fn id(&self) -> Option<&str> {
        causeway_tailnet::auth_keys::parse(&self.0).map(|(id, _)| id)
    }

    /// A key read back from the secret.
    pub fn from_secret(value: &str) -> Self {
        Self(value.trim().to_owned())
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthKey(<redacted>)")
    }
}

/// Control's admin API.
#[derive(Debug, Clone)]
pub struct AdminApi {
    /// Base URL, e.g. `http://127.0.0.1:8081`.
    pub url: String,
    /// File holding the bearer token.
    pub token_file: PathBuf,
}

/// What control knows of a node (`GET /api/v1/nodes`).
pub use causeway_wire::admin::NodeView;

impl AdminApi {
    /// Mints a reusable auth key tagged `tag:ROLE` that expires after
    /// `expiry` (`POST /api/v1/keys`). Reusable, because both instances of
    /// an HA pair join with it; short-lived, because it sits in a secret
    /// until deploy retires it.
    pub async fn create_key(&self, role: &str, expiry: Duration) -> anyhow::Result<AuthKey> {
        let body = CreateKeyRequest {
            reusable: true,
            ephemeral: false,
            tags: vec![format!("tag:{role}")],
            expiry_seconds: Some(expiry.as_secs()),
            user: None,
        };
        let created: CreatedKey = self
            .call(
                reqwest::Method::POST,
                "/api/v1/keys",
                Some(to_value(&body)?),
            )
            .await?;
        Ok(AuthKey(created.key))
    }

    /// Every auth key, never a secret (`GET /api/v1/keys`).
    pub async fn keys(&self) -> anyhow::Result<Vec<KeyView>> {
        self.call(reqwest::Method::GET, "/api/v1/keys", None).await
    }

    /// Revokes auth key `id` (`DELETE /api/v1/keys/ID`); a key control
    /// does not know (its database was replaced) is as good as revoked.
    pub async fn revoke_key(&self, id: &str) -> anyhow::Result<()> {
        let path = format!("/api/v1/keys/{id}");
        match self
            .call::<KeyView>(reqwest::Method::DELETE, &path, None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.downcast_ref::<NotFound>().is_some() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every node (`GET /api/v1/nodes`).
    pub async fn nodes(&self) -> anyhow::Result<Vec<NodeView>> {
        self.call(reqwest::Method::GET, "/api/v1/nodes", None).await
    }

    /// The split-DNS entries (`GET /api/v1/dns/split`): domain → resolvers.
    pub async fn split_dns(&self) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
        self.call(reqwest::Method::GET, "/api/v1/dns/split", None)
            .await
    }

    /// Sets one split-DNS entry (`PUT /api/v1/dns/split/DOMAIN`).
    pub async fn set_split_dns(&self, domain: &str, resolvers: &[String]) -> anyhow::Result<()> {
        let body = SplitDnsRequest {
            resolvers: resolvers.to_vec(),
        };
        let _: SplitDnsEntry = self
            .call(
                reqwest::Method::PUT,
                &format!("/api/v1/dns/split/{domain}"),
                Some(to_value(&body)?),
            )
            .await?;
        Ok(())
    }

    /// One admin API call; errors name the flag, the request and control's
    /// own error message.
    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<T> {
        let token = std::fs::read_to_string(&self.token_file).with_context(|| {
            format!(
                "--control-admin-token-file {}: reading it",
                self.token_file.display()
            )
        })?;
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let what = format!("--control-admin-url: {method} {url}");
        let mut request = reqwest::Client::new()
            .request(method, &url)
            .bearer_auth(token.trim());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let resp = request.send().await.with_context(|| what.clone())?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            let body = resp.text().await.unwrap_or_default();
            return Err(anyhow::Error::new(NotFound(body.trim().to_owned()))
                .context(format!("{what} failed ({status})")));
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            anyhow::bail!("{what} failed ({status}): {}", body.trim());
        }
        resp.json()
            .await
            .with_context(|| format!("{what}: reading the answer"))
    }
}

/// Control answered 404 (the thing named does not exist); its message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotFound(String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_auth_key_never_prints() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        std::fs::write(&path, "cwk_0123_secret\n").expect("write");
        let key = AuthKey::from_file(&path).expect("reads");
        assert_eq!(key.expose(), "cwk_0123_secret");
        assert_eq!(key.id(), None, "not a key control issued");
        let issued = AuthKey::from_secret(&format!("cwk_0123456789ab_{}\n", "ab".repeat(24)));
        assert_eq!(issued.id(), Some("0123456789ab"));
        assert!(!format!("{key:?}").contains("secret"));
        std::fs::write(&path, "  \n").expect("write");
        let err = AuthKey::from_file(&path).expect_err("empty");
        assert!(err.to_string().contains("--auth-key-file"), "{err}");
    }

    /// Answers one HTTP request with `body`; returns what was asked.
    fn fake_control(body: &'static str) -> (String, std::thread::JoinHandle<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = conn.read(&mut buf).expect("read");
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(str::to_owned)
                        })
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if rest.len() >= len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(answer.as_bytes()).expect("write");
            String::from_utf8_lossy(&request).to_string()
        });
        (url, handle)
    }

    #[test]
    fn a_reusable_key_tagged_with_the_role_is_minted_with_the_bearer_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token_file = dir.path().join("admin.token");
        std::fs::write(&token_file, "tok123\n").expect("write");
        let (url, server) =
            fake_control(r#"{"id":"0123456789ab","key":"cwk_0123456789ab_s3cret"}"#);
        let api = AdminApi { url, token_file };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");

        let key = rt
            .block_on(api.create_key("subnet-router", Duration::from_secs(1800)))
            .expect("minted");

        assert_eq!(key.expose(), "cwk_0123456789ab_s3cret");
        let request = server.join().expect("server");
        assert!(request.starts_with("POST /api/v1/keys "), "{request}");
        assert!(
            request
                .to_ascii_lowercase()
                .contains("authorization: bearer tok123"),
            "{request}"
        );
        let body: serde_json::Value = serde_json::from_str(
            request
                .split_once("\r\n\r\n")
                .map(|(_, b)| b)
                .unwrap_or_default(),
        )
        .expect("JSON body");
        assert_eq!(
            body,
            serde_json::json!({
                "reusable": true, "ephemeral": false, "tags": ["tag:subnet-router"],
                "expiry_seconds": 1800
            })
        );
    }
}
