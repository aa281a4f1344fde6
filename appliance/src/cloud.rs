//! The cloud's instance metadata service: where an appliance booted from a
//! Causeway image reads its config (EC2 user data), and where a node learns
//! the public IPv4 address the cloud maps onto its private one (EC2
//! `public-ipv4`; the address is on no interface, so a node that only
//! listed its interfaces would never offer it to peers).
//!
//! EC2's IMDSv2 is spoken through the AWS SDK's own client
//! (`aws_config::imds`), which fetches and renews the session token, retries
//! and honours `AWS_EC2_METADATA_SERVICE_ENDPOINT` like every other AWS
//! tool. Azure's IMDS is the other service this module is shaped for: a
//! second [`Cloud`] variant with its own two lookups; it is not built yet.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use aws_config::imds::client::Client as ImdsClient;
use aws_config::imds::client::error::ImdsError;
use serde::Deserialize;

use crate::config::Config;

/// A cloud whose metadata service the appliance reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Cloud {
    /// Amazon EC2, through IMDSv2.
    Aws,
}

/// Where `fetch-config` reads the appliance config from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ConfigSource {
    /// EC2 user data, through IMDSv2.
    AwsImds,
}

/// How long one metadata lookup may take in all, retries included: the
/// service answers from the hypervisor in milliseconds, so a long wait
/// means there is none.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// One cloud's metadata service.
#[derive(Debug)]
pub struct Metadata {
    imds: ImdsClient,
}

impl Metadata {
    /// A client for `cloud`'s metadata service at its usual address (or the
    /// one `AWS_EC2_METADATA_SERVICE_ENDPOINT` names).
    pub fn new(cloud: Cloud) -> Self {
        match cloud {
            Cloud::Aws => Self {
                imds: ImdsClient::builder()
                    .operation_timeout(LOOKUP_TIMEOUT)
                    .build(),
            },
        }
    }

    /// EC2's service at `endpoint` (tests).
    #[cfg(test)]
    fn aws_at(endpoint: &str) -> Self {
        Self {
            imds: ImdsClient::builder()
                .endpoint(endpoint)
                .expect("a valid endpoint URL")
                .operation_timeout(LOOKUP_TIMEOUT)
                .build(),
        }
    }

    /// The instance's user data, as text. An instance launched without
    /// any is an error that says so.
    pub async fn user_data(&self) -> anyhow::Result<String> {
        match self.imds.get("/latest/user-data").await {
            Ok(text) => Ok(text.as_ref().to_owned()),
            Err(e) if is_not_found(&e) => bail!(
                "EC2 user data: this instance was launched without any; expected the appliance \
                 config (TOML) that `provisioner deploy` or the Terraform module writes"
            ),
            Err(e) => Err(anyhow::Error::new(e)).context("EC2 user data: asking IMDSv2"),
        }
    }

    /// The host name a node registers with when its config names none: on
    /// EC2 the first label of the instance's private DNS name
    /// (`ip-10-0-1-5`), the name EC2's tools show and the one the
    /// provisioner matches instances to nodes by.
    pub async fn instance_hostname(&self) -> anyhow::Result<String> {
        let name = self
            .imds
            .get("/latest/meta-data/local-hostname")
            .await
            .context("EC2 metadata local-hostname: asking IMDSv2")?;
        let label = name.as_ref().trim().split('.').next().unwrap_or_default();
        if label.is_empty() {
            bail!("EC2 metadata local-hostname is empty");
        }
        Ok(label.to_owned())
    }

    /// The public IPv4 address the cloud maps to this instance, or `None`
    /// when it has none (a private subnet).
    pub async fn public_ipv4(&self) -> anyhow::Result<Option<Ipv4Addr>> {
        match self.imds.get("/latest/meta-data/public-ipv4").await {
            Ok(text) => {
                let text = text.as_ref().trim();
                let address = text.parse().with_context(|| {
                    format!("EC2 metadata public-ipv4: {text:?} is not an IPv4 address")
                })?;
                Ok(Some(address))
            }
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(anyhow::Error::new(e)).context("EC2 metadata public-ipv4: asking IMDSv2"),
        }
    }

    /// The ID of the instance's primary network interface (`eni-…`): the
    /// target a VPC route to this instance names. IMDS gives the primary
    /// interface's MAC, then that interface's ID.
    pub async fn primary_interface_id(&self) -> anyhow::Result<String> {
        let mac = self
            .imds
            .get("/latest/meta-data/mac")
            .await
            .context("EC2 metadata mac: asking IMDSv2")?;
        let mac = mac.as_ref().trim();
        if mac.is_empty() || !mac.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            bail!("EC2 metadata mac: {mac:?} is not a MAC address");
        }
        let id = self
            .imds
            .get(&format!(
                "/latest/meta-data/network/interfaces/macs/{mac}/interface-id"
            ))
            .await
            .with_context(|| format!("EC2 metadata interface-id of {mac}: asking IMDSv2"))?;
        let id = id.as_ref().trim();
        if !id.starts_with("eni-") {
            bail!("EC2 metadata interface-id of {mac}: {id:?} is not a network interface ID");
        }
        Ok(id.to_owned())
    }
}

fn is_not_found(e: &ImdsError) -> bool {
    matches!(e, ImdsError::ErrorResponse(r) if r.response().status().as_u16() == 404)
}

/// `appliance fetch-config`: reads the config from `source`, validates it
/// exactly as `run` would, and writes it to `output` (mode 0600, through a
/// temporary file and a rename, so `output` is either the whole new config
/// or untouched). Returns the roles it enables.
pub async fn fetch_config(
    source: ConfigSource,
    output: &Path,
) -> anyhow::Result<Vec<&'static str>> {
    let (text, name) = match source {
        ConfigSource::AwsImds => (
            Metadata::new(Cloud::Aws).user_data().await?,
            "EC2 user data",
        ),
    };
    let config = Config::parse(&text, name)?;
    write_atomically(output, text.as_bytes())
        .with_context(|| format!("writing the config to {}", output.display()))?;
    Ok(config.roles())
}

fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the output path names no file"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(".tmp");
    let temp = dir.join(temp_name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(e) = written.and_then(|()| std::fs::rename(&temp, path)) {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_test_support::FakeImds;

    #[tokio::test]
    async fn the_host_name_is_the_private_dns_names_first_label() {
        let imds = FakeImds::start();
        let metadata = Metadata::aws_at(imds.url());
        imds.set("local-hostname", Some("ip-10-0-1-5.ec2.internal\n"));
        assert_eq!(
            metadata.instance_hostname().await.expect("a name"),
            "ip-10-0-1-5"
        );
        imds.set("local-hostname", None);
        assert!(metadata.instance_hostname().await.is_err());
    }

    #[tokio::test]
    async fn the_primary_interface_id_comes_from_its_mac() {
        let imds = FakeImds::start();
        let metadata = Metadata::aws_at(imds.url());
        assert!(metadata.primary_interface_id().await.is_err());
        imds.set("mac", Some("0e:12:34:56:78:9a"));
        imds.set("interface-id", Some("eni-0123456789abcdef0\n"));
        assert_eq!(
            metadata.primary_interface_id().await.expect("an ID"),
            "eni-0123456789abcdef0"
        );
        imds.set("interface-id", Some("i-0123"));
        let err = metadata
            .primary_interface_id()
            .await
            .expect_err("not an ENI");
        assert!(
            format!("{err:#}").contains("is not a network interface ID"),
            "{err:#}"
        );
    }

    #[tokio::test]
    async fn the_public_address_is_read_and_its_absence_is_none() {
        let imds = FakeImds::start();
        let metadata = Metadata::aws_at(imds.url());
        assert_eq!(metadata.public_ipv4().await.expect("an answer"), None);
        imds.set("public-ipv4", Some("198.18.7.9"));
        assert_eq!(
            metadata.public_ipv4().await.expect("an answer"),
            Some(Ipv4Addr::new(198, 18, 7, 9))
        );
        imds.set("public-ipv4", Some("not an address"));
        let err = metadata.public_ipv4().await.expect_err("garbage");
        assert!(
            format!("{err:#}").contains("is not an IPv4 address"),
            "{err:#}"
        );
    }
}
