//! What each resource of a deployment looks like now, read from AWS (and
//! from control's admin API) without changing anything. [`super::plan`]
//! decides from these values what to change.

use std::collections::BTreeMap;

use super::api::{Aws, BucketSettings, IamRole, ResolverEndpoint};
use super::control::{AdminApi, AuthKey};
use super::spec;

/// The auth key's secret, beyond the metadata `prepare` read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSeen {
    /// Whether its value is the key from `--auth-key-file` (`None`: no
    /// file given, or no secret to compare with). The value itself is not
    /// kept.
    pub holds_file_key: Option<bool>,
}

/// What a secret deploy fills with minted keys (no `--auth-key-file`)
/// holds now. The value itself is not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MintedSecret {
    /// No secret, or one scheduled for deletion: nothing to read.
    Absent,
    /// [`spec::RETIRED_AUTH_KEY`]: the key was revoked after the
    /// instances joined.
    Retired,
    /// A key control issued.
    Key {
        /// Its public id.
        id: String,
        /// Whether control would register a node with it now (`None`:
        /// no admin API to ask).
        usable: Option<bool>,
    },
    /// Anything else (not a key control issued).
    Other,
}

impl MintedSecret {
    /// Whether an instance booting now could join with it.
    pub fn joins(&self) -> bool {
        match self {
            Self::Key { usable, .. } => usable.unwrap_or(true),
            Self::Absent | Self::Retired | Self::Other => false,
        }
    }
}

/// The instance role, its inline policies and its instance profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamSeen {
    /// The role, if it exists.
    pub role: Option<IamRole>,
    /// Its inline policies by name, decoded (empty without a role).
    pub policies: BTreeMap<String, String>,
    /// The roles in the instance profile, if the profile exists.
    pub profile: Option<Vec<String>>,
}

/// The recordings bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketSeen {
    /// Whether it exists.
    pub exists: bool,
    /// Its settings, when it exists.
    pub settings: Option<BucketSettings>,
}

/// The Route 53 Resolver inbound endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSeen {
    /// The endpoint, if it exists.
    pub endpoint: Option<ResolverEndpoint>,
    /// Its addresses (empty without an endpoint).
    pub addresses: Vec<String>,
}

/// Reads whether secret `name` holds `key` (only when a key was given and
/// the secret exists and is not scheduled for deletion).
pub async fn secret(
    aws: &Aws,
    name: &str,
    exists: bool,
    key: Option<&AuthKey>,
) -> anyhow::Result<SecretSeen> {
    let holds_file_key = match (exists, key) {
        (true, Some(key)) => {
            let current = aws.secret_value(name).await?;
            Some(current.as_deref() == Some(key.expose()))
        }
        _ => None,
    };
    Ok(SecretSeen { holds_file_key })
}

/// Reads what secret `name` holds (a minted key, the retired marker, or
/// something else) and, for a key, whether control still takes it.
pub async fn minted_secret(
    aws: &Aws,
    name: &str,
    admin: Option<&AdminApi>,
) -> anyhow::Result<MintedSecret> {
    match aws.secret(name).await? {
        Some(info) if !info.deleted => {}
        _ => return Ok(MintedSecret::Absent),
    }
    let Some(value) = aws.secret_value(name).await? else {
        return Ok(MintedSecret::Other);
    };
    if value.trim() == spec::RETIRED_AUTH_KEY {
        return Ok(MintedSecret::Retired);
    }
    let key = AuthKey::from_secret(&value);
    let Some(id) = key.id() else {
        return Ok(MintedSecret::Other);
    };
    let usable = match admin {
        Some(admin) => Some(admin.keys().await?.iter().any(|k| k.id == id && k.usable)),
        None => None,
    };
    Ok(MintedSecret::Key {
        id: id.to_owned(),
        usable,
    })
}

/// Reads role `name`, its inline policies and instance profile `name`.
pub async fn iam(aws: &Aws, name: &str) -> anyhow::Result<IamSeen> {
    let role = aws.role(name).await?;
    let policies = if role.is_some() {
        aws.role_policies(name).await?
    } else {
        BTreeMap::new()
    };
    let profile = aws.instance_profile(name).await?;
    Ok(IamSeen {
        role,
        policies,
        profile,
    })
}

/// Reads bucket `name` and, when it exists, its settings.
pub async fn bucket(aws: &Aws, name: &str) -> anyhow::Result<BucketSeen> {
    let exists = aws.bucket_exists(name).await?;
    let settings = if exists {
        Some(aws.bucket_settings(name).await?)
    } else {
        None
    };
    Ok(BucketSeen { exists, settings })
}

/// Reads resolver endpoint `name` in `vpc` and its addresses.
pub async fn resolver(aws: &Aws, vpc: &str, name: &str) -> anyhow::Result<ResolverSeen> {
    let endpoint = aws.resolver_endpoint(vpc, name).await?;
    let addresses = match &endpoint {
        Some(ep) => aws.resolver_addresses(&ep.id).await?,
        None => Vec::new(),
    };
    Ok(ResolverSeen {
        endpoint,
        addresses,
    })
}

/// The domains split DNS covers: the VPC's private hosted zones and its
/// own internal domain.
pub async fn private_domains(aws: &Aws, vpc: &str) -> anyhow::Result<Vec<String>> {
    let mut domains = aws.private_zones(vpc).await?;
    domains.push(spec::vpc_internal_domain(&aws.region));
    Ok(domains)
}

/// Control's split-DNS entries (domain → nameservers).
pub async fn control_split_dns(admin: &AdminApi) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    admin.split_dns().await
}
