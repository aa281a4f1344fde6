//! The Azure Blob part of the recorder's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where and how to write recordings to an Azure Blob Storage container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    /// Storage account name (3–24 lowercase letters and digits).
    pub account: String,
    /// Container name; the recorder does not create it.
    pub container: String,
    /// Blob name prefix; names are `<prefix>/<node-id>/<time>-<connection>.cast`.
    #[serde(default = "super::default_prefix")]
    pub prefix: String,
    /// Blob service endpoint, default `https://<account>.blob.core.windows.net`.
    /// Azurite's is `http://127.0.0.1:10000/<account>` (path-style).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// How the recorder proves who it is; managed identity when absent.
    #[serde(default)]
    pub credential: AzureCredential,
    /// Recordings larger than this go up as staged blocks of this size plus a block-list commit.
    #[serde(default = "default_block_size")]
    pub block_size_bytes: u64,
}

/// The recorder's credential for Azure Blob Storage. Never the secret itself:
/// a SAS is read from a file (a systemd credential, a mounted secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AzureCredential {
    /// An Entra ID token from the VM's managed identity (needs an https endpoint).
    ManagedIdentity {
        /// Client ID of a user-assigned identity; the system-assigned identity when absent.
        #[serde(default)]
        client_id: Option<String>,
    },
    /// A shared access signature (the URL query string) read from a file at start.
    SasFile {
        /// File holding the SAS, with or without a leading `?`.
        path: PathBuf,
    },
}

impl Default for AzureCredential {
    fn default() -> Self {
        Self::ManagedIdentity { client_id: None }
    }
}

/// Azure's largest block (Put Block, service version 2019-12-12 and later).
pub const AZURE_MAX_BLOCK_SIZE: u64 = 4000 * 1024 * 1024;
/// Our smallest block: below this, request overhead dominates.
pub const AZURE_MIN_BLOCK_SIZE: u64 = 1024;

fn default_block_size() -> u64 {
    8 * 1024 * 1024
}

impl AzureConfig {
    /// Checks names, the endpoint and the credential choice; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !valid_account(&self.account) {
            return Err(format!(
                "recorder storage.account is {:?}, expected an Azure storage account name: 3-24 lowercase letters and digits",
                self.account
            ));
        }
        if !valid_container(&self.container) {
            return Err(format!(
                "recorder storage.container is {:?}, expected an Azure container name: 3-63 lowercase letters, digits and single hyphens, starting and ending with a letter or digit",
                self.container
            ));
        }
        if !(AZURE_MIN_BLOCK_SIZE..=AZURE_MAX_BLOCK_SIZE).contains(&self.block_size_bytes) {
            return Err(format!(
                "recorder storage.block_size_bytes is {}, expected {AZURE_MIN_BLOCK_SIZE}..={AZURE_MAX_BLOCK_SIZE} (Azure's largest block is 4000 MiB)",
                self.block_size_bytes
            ));
        }
        let endpoint = self.endpoint_url()?;
        match &self.credential {
            AzureCredential::ManagedIdentity { client_id } => {
                if endpoint.scheme() != "https" {
                    return Err(format!(
                        "recorder storage.endpoint is {endpoint}, but storage.credential is managed_identity: Entra ID tokens are only sent over https (use kind = \"sas_file\" for an emulator)"
                    ));
                }
                if let Some(id) = client_id
                    && azure_core::Uuid::parse_str(id).is_err()
                {
                    return Err(format!(
                        "recorder storage.credential.client_id is {id:?}, expected the client ID (a GUID) of a user-assigned managed identity"
                    ));
                }
            }
            AzureCredential::SasFile { path } => {
                if path.as_os_str().is_empty() {
                    return Err(
                        "recorder storage.credential.path is empty, expected the file holding the SAS"
                            .to_owned(),
                    );
                }
            }
        }
        Ok(())
    }

    /// The blob service endpoint: the configured one, or the account's public one.
    pub fn endpoint_url(&self) -> Result<azure_core::http::Url, String> {
        let text = match &self.endpoint {
            Some(e) => e.clone(),
            None => format!("https://{}.blob.core.windows.net/", self.account),
        };
        let url = azure_core::http::Url::parse(&text).map_err(|e| {
            format!("recorder storage.endpoint is {text:?}, expected an http(s) URL: {e}")
        })?;
        let plain = matches!(url.scheme(), "http" | "https")
            && url.host().is_some()
            && url.username().is_empty()
            && url.password().is_none()
            && url.fragment().is_none();
        if !plain {
            return Err(format!(
                "recorder storage.endpoint is {text:?}, expected an http(s) URL with a host and no user or fragment"
            ));
        }
        if url.query().is_some() {
            // A query here would most likely be a SAS: a secret in the config file.
            return Err(format!(
                "recorder storage.endpoint has a query string, expected none: put a SAS in the file named by storage.credential.path (endpoint {}://{}{})",
                url.scheme(),
                url.host_str().unwrap_or_default(),
                url.path()
            ));
        }
        Ok(url)
    }
}

/// Azure storage account names: 3–24 lowercase ASCII letters and digits.
fn valid_account(name: &str) -> bool {
    (3..=24).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Azure container names: 3–63 of `[a-z0-9-]`, alphanumeric at both ends, no `--`.
fn valid_container(name: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes.iter().all(|&b| alnum(b) || b == b'-')
        && bytes.first().copied().is_some_and(alnum)
        && bytes.last().copied().is_some_and(alnum)
        && !name.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn azurite(credential: AzureCredential) -> AzureConfig {
        AzureConfig {
            account: "devstoreaccount1".into(),
            container: "recordings".into(),
            prefix: "rec".into(),
            endpoint: Some("http://127.0.0.1:10000/devstoreaccount1".into()),
            credential,
            block_size_bytes: 4096,
        }
    }

    fn sas_file() -> AzureCredential {
        AzureCredential::SasFile {
            path: "/run/credentials/sas".into(),
        }
    }

    #[test]
    fn parses_a_managed_identity_config_with_defaults() {
        let config: AzureConfig = toml::from_str(
            r#"
            account = "causewayrec"
            container = "recordings"
            "#,
        )
        .expect("valid config");
        assert_eq!(config.credential, AzureCredential::default());
        assert_eq!(config.prefix, "recordings");
        assert_eq!(config.block_size_bytes, 8 * 1024 * 1024);
        assert_eq!(
            config.endpoint_url().expect("default endpoint").as_str(),
            "https://causewayrec.blob.core.windows.net/"
        );
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn parses_a_sas_file_credential() {
        let config: AzureConfig = toml::from_str(
            r#"
            account = "devstoreaccount1"
            container = "recordings"
            endpoint = "http://127.0.0.1:10000/devstoreaccount1"
            [credential]
            kind = "sas_file"
            path = "/run/credentials/sas"
            "#,
        )
        .expect("valid config");
        assert_eq!(config.credential, sas_file());
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn parses_the_documented_recorder_section() {
        let config: crate::RecorderConfig = toml::from_str(
            r#"
            [storage]
            kind = "azure"
            account = "causewayrec"
            container = "recordings"
            block_size_bytes = 4194304
            [storage.credential]
            kind = "managed_identity"
            client_id = "6b2e3b2a-53a4-4c0e-9c53-3a1f0b1c2d3e"
            "#,
        )
        .expect("valid config");
        let crate::StorageConfig::Azure(azure) = &config.storage else {
            panic!("expected azure storage, got {:?}", config.storage);
        };
        assert_eq!(azure.block_size_bytes, 4 * 1024 * 1024);
        assert_eq!(
            azure.credential,
            AzureCredential::ManagedIdentity {
                client_id: Some("6b2e3b2a-53a4-4c0e-9c53-3a1f0b1c2d3e".into())
            }
        );
        assert_eq!(config.key_prefix(), "recordings");
        assert_eq!(config.validate(), Ok(()));
        let err = toml::from_str::<crate::RecorderConfig>(
            "[storage]\nkind = \"azure\"\naccount = \"a\"\n",
        )
        .expect_err("container is required");
        assert!(err.to_string().contains("container"), "{err}");
    }

    #[test]
    fn refuses_an_inline_sas_field() {
        let err = toml::from_str::<AzureConfig>(
            r#"
            account = "devstoreaccount1"
            container = "recordings"
            [credential]
            kind = "sas_file"
            sas = "sv=2020-12-06&sig=abc"
            "#,
        )
        .expect_err("unknown field");
        assert!(err.to_string().contains("unknown field `sas`"), "{err}");
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: Vec<(AzureConfig, &str)> = vec![
            (
                AzureConfig {
                    account: "Bad_Account".into(),
                    ..azurite(sas_file())
                },
                "storage.account is \"Bad_Account\"",
            ),
            (
                AzureConfig {
                    container: "a--b".into(),
                    ..azurite(sas_file())
                },
                "storage.container is \"a--b\"",
            ),
            (
                AzureConfig {
                    container: "-ab".into(),
                    ..azurite(sas_file())
                },
                "storage.container is \"-ab\"",
            ),
            (
                AzureConfig {
                    block_size_bytes: 10,
                    ..azurite(sas_file())
                },
                "storage.block_size_bytes is 10",
            ),
            (
                AzureConfig {
                    endpoint: Some("not a url".into()),
                    ..azurite(sas_file())
                },
                "storage.endpoint is \"not a url\"",
            ),
            (
                AzureConfig {
                    endpoint: Some("ftp://host/x".into()),
                    ..azurite(sas_file())
                },
                "storage.endpoint is \"ftp://host/x\"",
            ),
            (
                AzureConfig {
                    endpoint: Some("http://127.0.0.1:1/a?sv=1&sig=SECRET".into()),
                    ..azurite(sas_file())
                },
                "storage.endpoint has a query string",
            ),
            (
                azurite(AzureCredential::default()),
                "but storage.credential is managed_identity",
            ),
            (
                AzureConfig {
                    endpoint: None,
                    ..azurite(AzureCredential::ManagedIdentity {
                        client_id: Some("me".into()),
                    })
                },
                "storage.credential.client_id is \"me\"",
            ),
            (
                azurite(AzureCredential::SasFile { path: "".into() }),
                "storage.credential.path is empty",
            ),
        ];
        for (config, expected) in cases {
            let err = config.validate().expect_err(expected);
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
            assert!(!err.contains("SECRET"), "a SAS is never echoed: {err}");
        }
    }

    #[test]
    fn accepts_a_user_assigned_identity() {
        let config = AzureConfig {
            endpoint: None,
            ..azurite(AzureCredential::ManagedIdentity {
                client_id: Some("6b2e3b2a-53a4-4c0e-9c53-3a1f0b1c2d3e".into()),
            })
        };
        assert_eq!(config.validate(), Ok(()));
    }
}
