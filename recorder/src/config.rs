//! The recorder's configuration: TOML-friendly, every field defaulted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

mod azure;
pub use azure::{AZURE_MAX_BLOCK_SIZE, AZURE_MIN_BLOCK_SIZE, AzureConfig, AzureCredential};

/// Everything the recorder role needs, as read from the appliance's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecorderConfig {
    /// Where ingest listens (HTTP/1.1 and h2c on one port). Port 80 by
    /// default, the port Tailscale SSH assumes for a recorder address.
    pub listen: SocketAddr,
    /// Source addresses allowed to send recordings; everyone else gets 403.
    pub allow: Vec<IpNet>,
    /// Local directory where recordings are fsync'd before they are acked.
    pub spool_dir: PathBuf,
    /// Longest accepted line of a recording, in bytes.
    pub max_line_bytes: usize,
    /// Interval between keep-alive acks on an idle `/v2/record` stream.
    pub ack_interval_ms: u64,
    /// A sender silent for this long has its recording ended with an error.
    pub stall_timeout_ms: u64,
    /// A sender must complete its header line within this long of the
    /// request's start, or its recording is ended with an error.
    pub header_timeout_ms: u64,
    /// Recordings received at once; one more is refused with 503, which a
    /// sender with several recorders takes as "try the next one".
    pub max_sessions: usize,
    /// Recordings received at once from one source address; one more is
    /// refused with 429 while other sources go on.
    pub max_sessions_per_source: usize,
    /// Free space the spool leaves on its filesystem: a recording is refused
    /// (503), or ended with an error after its acked bytes, rather than
    /// fill the disk. 0 turns the check off.
    pub spool_min_free_bytes: u64,
    /// Upload retry and parallelism.
    pub upload: UploadConfig,
    /// Where finished recordings go.
    pub storage: StorageConfig,
    /// The web UI (`[recorder.web]`); no UI when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web: Option<WebConfig>,
}

/// Where the web UI listens and who may use it. Beside a tailnet node, who
/// may view is decided by the tailnet policy (a grant of
/// [`causeway_wire::caps::RECORDER_CAP`]), not here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawWebConfig")]
pub struct WebConfig {
    /// Address of the UI's own listener (HTTP/1.1).
    pub listen: SocketAddr,
    /// Source networks allowed to view recordings; everyone else gets 403.
    pub allow: Vec<IpNet>,
    /// Host names the UI answers to (the `Host` header), besides IP
    /// literals: a request naming any other host is refused, so a web page
    /// that rebinds its own name to the recorder's address cannot read it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// `[recorder.web]` as written: [`WebConfig`] plus the removed `viewers`,
/// read only to refuse it with a message that says what replaced it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    listen: SocketAddr,
    allow: Vec<IpNet>,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    viewers: Option<serde::de::IgnoredAny>,
}

/// Why a config naming `[recorder.web] viewers` is refused.
pub const VIEWERS_REMOVED: &str = "recorder web.viewers is no longer read: who may view recordings comes from the tailnet policy. \
Remove viewers and add a grant such as {\"src\": [\"group:security\"], \"dst\": [\"tag:recorder\"], \"ip\": [\"tcp:8091\"], \
\"app\": {\"tailscale.com/cap/tsrecorder\": [{\"actions\": [\"view\"]}]}} with `appliance admin policy set` (see docs/recorder.md)";

impl TryFrom<RawWebConfig> for WebConfig {
    type Error = &'static str;
    fn try_from(raw: RawWebConfig) -> Result<Self, Self::Error> {
        if raw.viewers.is_some() {
            return Err(VIEWERS_REMOVED);
        }
        Ok(Self {
            listen: raw.listen,
            allow: raw.allow,
            hosts: raw.hosts,
        })
    }
}

/// How the spool hands recordings to storage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadConfig {
    /// First retry delay after a failed upload.
    pub retry_min_ms: u64,
    /// Cap on the (doubling) retry delay.
    pub retry_max_ms: u64,
    /// Uploads running at once.
    pub concurrency: usize,
}

/// The storage backend for finished recordings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum StorageConfig {
    /// A local directory.
    Local {
        /// Root directory; recordings go to `<dir>/<node-id>/<time>-<connection>.cast`.
        dir: PathBuf,
        /// Delete recordings older than this many days; keep forever when absent.
        #[serde(default)]
        retention_days: Option<u32>,
    },
    /// An S3 bucket (or an S3-compatible endpoint such as moto).
    S3(S3Config),
    /// An Azure Blob Storage container (or Azurite).
    Azure(AzureConfig),
}

/// Where and how to write recordings to S3.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix; keys are `<prefix>/<node-id>/<time>-<connection>.cast`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Region; taken from the environment when absent.
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint override, for S3-compatible stores and tests.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by moto and MinIO.
    #[serde(default)]
    pub force_path_style: bool,
    /// Recordings larger than this go up as multipart uploads of this part size.
    #[serde(default = "default_part_size")]
    pub part_size_bytes: u64,
}

/// S3's minimum size for all but the last part of a multipart upload.
pub const S3_MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

fn default_prefix() -> String {
    "recordings".to_owned()
}

fn default_part_size() -> u64 {
    8 * 1024 * 1024
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 80)),
            // The tailnet's IPv4 range: SSH servers send from their tailnet address.
            allow: vec![IpNet::V4(
                ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(100, 64, 0, 0), 10)
                    .expect("100.64.0.0/10 is a valid prefix"),
            )],
            spool_dir: PathBuf::from("/var/lib/causeway/recorder/spool"),
            max_line_bytes: 1024 * 1024,
            ack_interval_ms: 5_000,
            stall_timeout_ms: 900_000,
            header_timeout_ms: 10_000,
            max_sessions: 10_000,
            max_sessions_per_source: 32,
            spool_min_free_bytes: 256 * 1024 * 1024,
            upload: UploadConfig::default(),
            storage: StorageConfig::Local {
                dir: PathBuf::from("/var/lib/causeway/recorder/recordings"),
                retention_days: None,
            },
            web: None,
        }
    }
}

impl Default for UploadConfig {
    fn default() -> Self {
        Self {
            retry_min_ms: 1_000,
            retry_max_ms: 60_000,
            concurrency: 4,
        }
    }
}

impl RecorderConfig {
    /// Checks values serde cannot: non-zero limits, S3's part minimum, Azure names.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_line_bytes == 0 {
            return Err("recorder max_line_bytes is 0, expected a positive byte count".to_owned());
        }
        if self.ack_interval_ms == 0 || self.ack_interval_ms >= 30_000 {
            return Err(format!(
                "recorder ack_interval_ms is {}, expected 1..29999 (Tailscale SSH gives up after 30 s without an ack)",
                self.ack_interval_ms
            ));
        }
        if self.stall_timeout_ms == 0 {
            return Err("recorder stall_timeout_ms is 0, expected a positive duration".to_owned());
        }
        if self.header_timeout_ms == 0 {
            return Err("recorder header_timeout_ms is 0, expected a positive duration".to_owned());
        }
        if self.max_sessions_per_source == 0 {
            return Err(
                "recorder max_sessions_per_source is 0, expected at least 1 (0 would refuse every recording)"
                    .to_owned(),
            );
        }
        if self.max_sessions == 0 {
            return Err(
                "recorder max_sessions is 0, expected at least 1 (0 would refuse every recording)"
                    .to_owned(),
            );
        }
        if self.upload.concurrency == 0 {
            return Err("recorder upload.concurrency is 0, expected at least 1".to_owned());
        }
        if let StorageConfig::S3(s3) = &self.storage
            && s3.part_size_bytes < S3_MIN_PART_SIZE
        {
            return Err(format!(
                "recorder storage.part_size_bytes is {}, expected at least {S3_MIN_PART_SIZE} (S3's minimum part size)",
                s3.part_size_bytes
            ));
        }
        if let StorageConfig::Azure(azure) = &self.storage {
            azure.validate()?;
        }
        if let Some(web) = &self.web {
            if web.allow.is_empty() {
                return Err(format!(
                    "recorder web.allow is empty, expected at least one network allowed to view recordings (the UI on {} would refuse everyone)",
                    web.listen
                ));
            }
            for host in &web.hosts {
                if host.is_empty()
                    || host.contains(|c: char| c == ':' || c == '/' || c.is_whitespace())
                {
                    return Err(format!(
                        "recorder web.hosts entry {host:?}: expected a host name without port or scheme (recorder.example.com)"
                    ));
                }
            }
            if web.listen == self.listen {
                return Err(format!(
                    "recorder web.listen is {}, the same as listen, expected an address of its own",
                    web.listen
                ));
            }
        }
        Ok(())
    }

    /// The keep-alive ack interval.
    pub fn ack_interval(&self) -> Duration {
        Duration::from_millis(self.ack_interval_ms)
    }

    /// The stall timeout.
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.stall_timeout_ms)
    }

    /// The deadline for a recording's header line.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }

    /// The key prefix of the configured storage.
    pub fn key_prefix(&self) -> &str {
        match &self.storage {
            StorageConfig::Local { .. } => "",
            StorageConfig::S3(s3) => &s3.prefix,
            StorageConfig::Azure(azure) => &azure.prefix,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_minimal_s3_config() {
        let config: RecorderConfig = toml::from_str(
            r#"
            allow = ["100.64.0.0/10", "fd7a:115c:a1e0::/48"]
            spool_dir = "/tmp/spool"
            [storage]
            kind = "s3"
            bucket = "recordings"
            "#,
        )
        .expect("valid config");
        assert_eq!(config.allow.len(), 2);
        assert_eq!(config.max_line_bytes, 1024 * 1024);
        assert_eq!(config.key_prefix(), "recordings");
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn refuses_a_part_size_below_s3s_minimum() {
        let config = RecorderConfig {
            storage: StorageConfig::S3(S3Config {
                bucket: "b".into(),
                prefix: String::new(),
                region: None,
                endpoint_url: None,
                force_path_style: false,
                part_size_bytes: 1024,
            }),
            ..RecorderConfig::default()
        };
        let err = config.validate().expect_err("too small");
        assert!(err.contains("part_size_bytes is 1024"), "{err}");
    }

    #[test]
    fn refuses_zero_limits_naming_the_field() {
        for (toml, field) in [
            ("max_sessions = 0", "max_sessions is 0"),
            (
                "max_sessions_per_source = 0",
                "max_sessions_per_source is 0",
            ),
            ("header_timeout_ms = 0", "header_timeout_ms is 0"),
            ("max_line_bytes = 0", "max_line_bytes is 0"),
            ("stall_timeout_ms = 0", "stall_timeout_ms is 0"),
            ("ack_interval_ms = 30000", "ack_interval_ms is 30000"),
            ("[upload]\nconcurrency = 0", "upload.concurrency is 0"),
        ] {
            let config: RecorderConfig = toml::from_str(toml).expect("parses");
            let err = config.validate().expect_err(toml);
            assert!(err.contains(field), "{toml}: {err}");
        }
    }

    #[test]
    fn viewers_in_the_config_are_refused_pointing_at_a_policy_grant() {
        let err = toml::from_str::<RecorderConfig>(
            r#"
            [web]
            listen = "100.64.0.5:8080"
            allow = ["100.64.0.0/10"]
            viewers = ["alice@example.com"]
            "#,
        )
        .expect_err("viewers are refused")
        .to_string();
        assert!(err.contains("web.viewers is no longer read"), "{err}");
        assert!(err.contains("tailscale.com/cap/tsrecorder"), "{err}");
        // Any other unknown key is still refused by name.
        let err = toml::from_str::<RecorderConfig>(
            r#"
            [web]
            listen = "100.64.0.5:8080"
            allow = ["100.64.0.0/10"]
            hostz = []
            "#,
        )
        .expect_err("typo")
        .to_string();
        assert!(err.contains("unknown field `hostz`"), "{err}");
    }

    #[test]
    fn parses_a_web_section_and_refuses_an_empty_allow_list() {
        let mut config: RecorderConfig = toml::from_str(
            r#"
            [web]
            listen = "100.64.0.5:8080"
            allow = ["100.64.0.0/10"]
            "#,
        )
        .expect("valid config");
        let web = config.web.clone().expect("web section");
        assert_eq!(web.listen, "100.64.0.5:8080".parse().expect("address"));
        assert_eq!(config.validate(), Ok(()));

        config.web = Some(WebConfig {
            allow: vec![],
            ..web.clone()
        });
        let err = config.validate().expect_err("empty allow");
        assert!(err.contains("web.allow is empty"), "{err}");
        config.web = Some(WebConfig {
            hosts: vec!["https://recorder.example.com".into()],
            ..web.clone()
        });
        let err = config.validate().expect_err("a URL as host");
        assert!(
            err.contains("web.hosts entry \"https://recorder.example.com\""),
            "{err}"
        );
        config.web = Some(WebConfig {
            listen: config.listen,
            ..web
        });
        let err = config.validate().expect_err("shared port");
        assert!(
            err.contains("web.listen is 0.0.0.0:80, the same as listen"),
            "{err}"
        );

        let err = toml::from_str::<RecorderConfig>("[web]\nallow = []\n").expect_err("no listen");
        assert!(err.to_string().contains("missing field `listen`"), "{err}");
        let err = toml::from_str::<RecorderConfig>(
            "[web]\nlisten = \"127.0.0.1:1\"\nallow = []\nport = 1\n",
        )
        .expect_err("unknown field");
        assert!(err.to_string().contains("unknown field `port`"), "{err}");
    }

    #[test]
    fn default_round_trips_through_toml() {
        let text = toml::to_string(&RecorderConfig::default()).expect("serializes");
        let back: RecorderConfig = toml::from_str(&text).expect("parses");
        assert_eq!(back, RecorderConfig::default());
    }
}
