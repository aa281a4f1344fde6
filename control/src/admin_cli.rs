//! `appliance admin …`: a client of control's admin HTTP API.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use causeway_wire::admin::{
    AddDeviceRequest, AddedDevice, CreateKeyRequest, CreatedKey, DeletedNode, Done, ErrorBody,
    KeyView, NodeView, RouteRequest, RouteView, SplitDnsEntry, SplitDnsRequest,
};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::duration::parse_duration;

/// Options of `appliance admin`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// Base URL of control's admin API.
    #[arg(
        long,
        env = "CAUSEWAY_ADMIN_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub url: String,
    /// File holding the admin bearer token (control's `admin.token`).
    #[arg(
        long,
        env = "CAUSEWAY_ADMIN_TOKEN_FILE",
        default_value = "/var/lib/causeway/admin.token"
    )]
    pub token_file: PathBuf,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// Admin subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Auth keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Nodes.
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// Subnet routes.
    #[command(subcommand)]
    Routes(RoutesCommand),
    /// WireGuard-only devices.
    #[command(subcommand, name = "wg-device")]
    WgDevice(WgDeviceCommand),
    /// Tailnet policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// DNS: split-DNS entries sent to every node.
    #[command(subcommand)]
    Dns(DnsCommand),
}

/// `admin dns …`
#[derive(Debug, Subcommand)]
pub enum DnsCommand {
    /// Lists split-DNS entries.
    List,
    /// Sends queries for a domain (and its subdomains) to these resolvers.
    SetSplit {
        /// Domain, like corp.example or ec2.internal.
        domain: String,
        /// Resolver address (repeatable, tried in order).
        #[arg(long = "resolver", required = true)]
        resolvers: Vec<String>,
    },
    /// Removes a split-DNS entry.
    RemoveSplit {
        /// Domain.
        domain: String,
    },
}

/// `admin keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Creates an auth key and prints it (once).
    Create {
        /// May register many machines.
        #[arg(long)]
        reusable: bool,
        /// Machines registered with it are removed when they go away.
        #[arg(long)]
        ephemeral: bool,
        /// Tag for machines registered with it (repeatable), `tag:NAME`.
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Lifetime, like 1h or 24h or 90d.
        #[arg(long, value_parser = parse_duration)]
        expiry: Option<std::time::Duration>,
        /// User owning machines registered with it, `name@domain`.
        #[arg(long, value_parser = parse_user)]
        user: Option<String>,
    },
    /// Lists auth keys (never their secrets).
    List,
    /// Revokes an auth key.
    Revoke {
        /// Key id.
        id: String,
    },
}

/// `admin nodes …`
#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// Lists nodes.
    List,
    /// Deletes a node.
    Delete {
        /// Node id.
        id: u64,
    },
    /// Expires a node's key now, forcing it to rotate.
    Expire {
        /// Node id.
        id: u64,
    },
}

/// `admin routes …`
#[derive(Debug, Subcommand)]
pub enum RoutesCommand {
    /// Lists advertised, approved and primary routes per node.
    List,
    /// Approves a route a node advertises.
    Approve {
        /// Node id or name.
        node: String,
        /// Prefix, like 198.19.1.0/24.
        prefix: String,
    },
    /// Withdraws approval of a route.
    Unapprove {
        /// Node id or name.
        node: String,
        /// Prefix.
        prefix: String,
    },
}

/// `admin wg-device …`
#[derive(Debug, Subcommand)]
pub enum WgDeviceCommand {
    /// Registers a WireGuard-only device and prints its wg-quick config.
    Add {
        /// Device name.
        name: String,
        /// User owning the device, `name@domain`.
        #[arg(long, value_parser = parse_user)]
        user: Option<String>,
    },
}

/// `admin policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Prints the policy.
    Get,
    /// Replaces the policy with a huJSON file.
    Set {
        /// huJSON policy file.
        file: PathBuf,
    },
}

/// Runs an admin command against control's API and prints its output.
pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    println!("{}", output(args).await?);
    Ok(())
}

/// Runs an admin command against control's API and returns what
/// [`run`] prints.
pub async fn output(args: AdminArgs) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading admin token {}", args.token_file.display()))?;
    let client = Client {
        http: reqwest::Client::new(),
        base: args.url.trim_end_matches('/').to_owned(),
        token: token.trim().to_owned(),
    };
    let out = match args.command {
        AdminCommand::Keys(KeysCommand::Create {
            reusable,
            ephemeral,
            tags,
            expiry,
            user,
        }) => {
            let body = CreateKeyRequest {
                reusable,
                ephemeral,
                tags,
                expiry_seconds: expiry.map(|d| d.as_secs()),
                user,
            };
            let created: CreatedKey = client
                .call(reqwest::Method::POST, "/api/v1/keys", Body::json(&body)?)
                .await?;
            if args.json {
                to_json(&created)?
            } else {
                created.key
            }
        }
        AdminCommand::Keys(KeysCommand::List) => {
            let keys: Vec<KeyView> = client
                .call(reqwest::Method::GET, "/api/v1/keys", Body::None)
                .await?;
            if args.json {
                to_json(&keys)?
            } else {
                table(
                    &serde_json::to_value(&keys)?,
                    &[
                        "id",
                        "reusable",
                        "ephemeral",
                        "tags",
                        "user",
                        "expires",
                        "revoked",
                        "used",
                        "usable",
                    ],
                )
            }
        }
        AdminCommand::Keys(KeysCommand::Revoke { id }) => {
            let key: KeyView = client
                .call(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/keys/{id}"),
                    Body::None,
                )
                .await?;
            if args.json {
                to_json(&key)?
            } else {
                format!("revoked auth key {id}")
            }
        }
        AdminCommand::Nodes(NodesCommand::List) => {
            let nodes: Vec<NodeView> = client
                .call(reqwest::Method::GET, "/api/v1/nodes", Body::None)
                .await?;
            if args.json {
                to_json(&nodes)?
            } else {
                table(
                    &serde_json::to_value(&nodes)?,
                    &[
                        "id",
                        "name",
                        "addresses",
                        "tags",
                        "user",
                        "online",
                        "expired",
                        "endpoints",
                        "priority",
                        "primary_routes",
                        "standby_routes",
                        "unhealthy_routes",
                    ],
                )
            }
        }
        AdminCommand::Nodes(NodesCommand::Delete { id }) => {
            let v: DeletedNode = client
                .call(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/nodes/{id}"),
                    Body::None,
                )
                .await?;
            if args.json {
                to_json(&v)?
            } else {
                format!("deleted node {id}")
            }
        }
        AdminCommand::Nodes(NodesCommand::Expire { id }) => {
            let v: NodeView = client
                .call(
                    reqwest::Method::POST,
                    &format!("/api/v1/nodes/{id}/expire"),
                    Body::None,
                )
                .await?;
            if args.json {
                to_json(&v)?
            } else {
                format!("expired the key of node {id}; it must rotate")
            }
        }
        AdminCommand::Routes(RoutesCommand::List) => {
            let routes: Vec<RouteView> = client
                .call(reqwest::Method::GET, "/api/v1/routes", Body::None)
                .await?;
            if args.json {
                to_json(&routes)?
            } else {
                table(
                    &serde_json::to_value(&routes)?,
                    &[
                        "node",
                        "name",
                        "online",
                        "advertised",
                        "approved",
                        "priority",
                        "primary",
                        "standby",
                        "unhealthy",
                    ],
                )
            }
        }
        AdminCommand::Routes(RoutesCommand::Approve { node, prefix }) => {
            let body = RouteRequest {
                node: node.clone(),
                prefix: prefix.clone(),
            };
            let v: RouteView = client
                .call(
                    reqwest::Method::POST,
                    "/api/v1/routes/approve",
                    Body::json(&body)?,
                )
                .await?;
            if args.json {
                to_json(&v)?
            } else {
                format!("approved {prefix} for {node}")
            }
        }
        AdminCommand::Routes(RoutesCommand::Unapprove { node, prefix }) => {
            let body = RouteRequest {
                node: node.clone(),
                prefix: prefix.clone(),
            };
            let v: RouteView = client
                .call(
                    reqwest::Method::POST,
                    "/api/v1/routes/unapprove",
                    Body::json(&body)?,
                )
                .await?;
            if args.json {
                to_json(&v)?
            } else {
                format!("unapproved {prefix} for {node}")
            }
        }
        AdminCommand::WgDevice(WgDeviceCommand::Add { name, user }) => {
            let v: AddedDevice = client
                .call(
                    reqwest::Method::POST,
                    "/api/v1/wireguard-devices",
                    Body::json(&AddDeviceRequest { name, user })?,
                )
                .await?;
            if args.json {
                to_json(&v)?
            } else {
                v.config.trim_end().to_owned()
            }
        }
        AdminCommand::Policy(PolicyCommand::Get) => {
            let text = client
                .text(reqwest::Method::GET, "/api/v1/policy", None)
                .await?;
            if args.json {
                serde_json::json!({ "policy": text }).to_string()
            } else {
                text.trim_end().to_owned()
            }
        }
        AdminCommand::Policy(PolicyCommand::Set { file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading policy {}", file.display()))?;
            let v: Done = client
                .call(reqwest::Method::PUT, "/api/v1/policy", Body::Text(text))
                .await?;
            if args.json {
                to_json(&v)?
            } else {
                format!("policy set from {}", file.display())
            }
        }
        AdminCommand::Dns(DnsCommand::List) => {
            let v: BTreeMap<String, Vec<IpAddr>> = client
                .call(reqwest::Method::GET, "/api/v1/dns/split", Body::None)
                .await?;
            if args.json {
                to_json(&v)?
            } else {
                split_dns_lines(&v)
            }
        }
        AdminCommand::Dns(DnsCommand::SetSplit { domain, resolvers }) => {
            let body = SplitDnsRequest {
                resolvers: resolvers.clone(),
            };
            let v: SplitDnsEntry = client
                .call(
                    reqwest::Method::PUT,
                    &format!("/api/v1/dns/split/{domain}"),
                    Body::json(&body)?,
                )
                .await?;
            if args.json {
                to_json(&v)?
            } else {
                format!("split DNS: {} → {}", v.domain, resolvers.join(", "))
            }
        }
        AdminCommand::Dns(DnsCommand::RemoveSplit { domain }) => {
            let v: Done = client
                .call(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/dns/split/{domain}"),
                    Body::None,
                )
                .await?;
            if args.json {
                to_json(&v)?
            } else {
                format!("split DNS for {domain} removed")
            }
        }
    };
    Ok(out)
}

/// `--user`: checked here so a typo fails before control is asked.
fn parse_user(text: &str) -> Result<String, causeway_tailnet::InvalidUser> {
    causeway_tailnet::validate_user(text)?;
    Ok(text.to_owned())
}

/// `domain  resolver, resolver` lines, one per entry.
fn split_dns_lines(entries: &BTreeMap<String, Vec<IpAddr>>) -> String {
    if entries.is_empty() {
        return "no split-DNS entries".into();
    }
    entries
        .iter()
        .map(|(domain, resolvers)| {
            let list: Vec<String> = resolvers.iter().map(IpAddr::to_string).collect();
            format!("{domain}  {}", list.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What `--json` prints: the answer, as control's types serialise it.
fn to_json(value: &impl Serialize) -> anyhow::Result<String> {
    Ok(serde_json::to_string(value)?)
}

enum Body {
    None,
    Json(Value),
    Text(String),
}

impl Body {
    fn json(request: &impl Serialize) -> anyhow::Result<Self> {
        Ok(Self::Json(serde_json::to_value(request)?))
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Body,
    ) -> anyhow::Result<T> {
        let text = self.text(method.clone(), path, Some(body)).await?;
        serde_json::from_str(&text)
            .with_context(|| format!("{method} {path}: control's answer is not what it documents"))
    }

    async fn text(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Body>,
    ) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        req = match body {
            None | Some(Body::None) => req,
            Some(Body::Json(v)) => req.json(&v),
            Some(Body::Text(t)) => req
                .header(reqwest::header::CONTENT_TYPE, "application/hujson")
                .body(t),
        };
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}: is control running?"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("{method} {url}: reading the response"))?;
        if !status.is_success() {
            let detail = serde_json::from_str::<ErrorBody>(&text)
                .ok()
                .filter(|e| !e.error.is_empty())
                .map_or(text, |e| e.error);
            bail!("{method} {path} failed ({status}): {detail}");
        }
        Ok(text)
    }
}

/// A plain text table of the given columns of a JSON array of objects.
fn table(rows: &Value, columns: &[&str]) -> String {
    let cell = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".to_owned(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    let mut grid: Vec<Vec<String>> = vec![columns.iter().map(|c| c.to_uppercase()).collect()];
    for row in rows.as_array().map(Vec::as_slice).unwrap_or_default() {
        grid.push(columns.iter().map(|c| cell(&row[*c])).collect());
    }
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| grid.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    grid.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        admin: AdminArgs,
    }

    #[test]
    fn user_flags_take_a_user_and_refuse_anything_else_naming_it() {
        let cli = Cli::try_parse_from(["admin", "keys", "create", "--user", "alice@example.com"])
            .expect("parses");
        let AdminCommand::Keys(KeysCommand::Create { user, .. }) = cli.admin.command else {
            panic!("not keys create: {:?}", cli.admin.command);
        };
        assert_eq!(user.as_deref(), Some("alice@example.com"));
        let cli =
            Cli::try_parse_from(["admin", "wg-device", "add", "printer", "--user", "bob@x.io"])
                .expect("parses");
        let AdminCommand::WgDevice(WgDeviceCommand::Add { name, user }) = cli.admin.command else {
            panic!("not wg-device add: {:?}", cli.admin.command);
        };
        assert_eq!(
            (name.as_str(), user.as_deref()),
            ("printer", Some("bob@x.io"))
        );

        for args in [
            &["admin", "keys", "create", "--user", "alice"][..],
            &["admin", "wg-device", "add", "printer", "--user", "alice"][..],
        ] {
            let e = Cli::try_parse_from(args).expect_err("refused").to_string();
            assert!(e.contains("--user") && e.contains("\"alice\""), "{e}");
            assert!(e.contains("name@domain"), "{e}");
        }
    }

    #[test]
    fn tables_align_columns() {
        let rows = serde_json::json!([{"id": 1, "name": "router", "tags": ["tag:r"]}, {"id": 12, "name": "a", "tags": []}]);
        assert_eq!(
            table(&rows, &["id", "name", "tags"]),
            "ID  NAME    TAGS\n1   router  tag:r\n12  a       -"
        );
    }
}
