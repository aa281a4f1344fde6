//! What a deployment should look like in AWS, as plain values
//! (docs/reference/aws-contract.md): names and tags here; user data,
//! policy documents, lifecycle rules, firewall rules, split DNS and the
//! launch template in their own modules; and the checks of the flags that
//! need no AWS call. Pure, so the contract is unit-tested.

mod firewall;
mod flags;
mod lifecycle;
mod policy;
mod split_dns;
mod template;
mod user_data;

use std::collections::BTreeMap;

pub use self::firewall::{IngressRule, appliance_ingress, dns_ingress, listen_port, rule_diff};
pub use self::flags::{check_bucket_name, check_flags, check_kms_key_arn, check_prefix};
pub use self::lifecycle::{Lifecycle, LifecycleRule};
pub use self::policy::{
    recordings_policy, return_route_policy, return_route_summary, same_policy, secret_policy,
    tls_only_bucket_policy, trust_policy,
};
pub use self::split_dns::{SplitDnsEntry, split_dns_entries, vpc_internal_domain};
pub use self::template::{TemplateData, template_diff};
pub use self::user_data::{
    ApplianceConfig, ConnectorData, DEFAULT_RECORDER_ALLOW, EXIT_ROUTES, RECORDER_LISTEN,
    RECORDER_SPOOL_DIR, RECORDER_WEB_LISTEN, RECORDINGS_PREFIX, RecorderData, user_data,
};

use crate::name::DeploymentName;
use crate::role::Role;

/// The WireGuard UDP port, the only one open inbound.
pub const WIREGUARD_PORT: u16 = 41641;
/// Control's node-facing TCP port.
pub const CONTROL_PORT: u16 = 8080;
/// Tag naming the deployment; `destroy` deletes what carries it.
pub const TAG_DEPLOYMENT: &str = "causeway:deployment";
/// Tag naming the role.
pub const TAG_ROLE: &str = "causeway:role";
/// Tag marking our appliance images.
pub const TAG_IMAGE: &str = "causeway:image";
/// Tag giving an image's architecture.
pub const TAG_ARCH: &str = "causeway:arch";
/// Tag on an instance: the launch template version it was launched from,
/// so `deploy` knows which instances a template change must replace.
pub const TAG_TEMPLATE_VERSION: &str = "causeway:template-version";
/// Tag on a network interface the provisioner creates itself (value
/// `egress`): an exit node's egress interface, found by `destroy` and
/// `status` apart from the instances' own interfaces.
pub const TAG_INTERFACE: &str = "causeway:interface";
/// The value of [`TAG_INTERFACE`] on an egress interface.
pub const EGRESS_INTERFACE: &str = "egress";
/// The id of the recordings lifecycle rule.
pub const LIFECYCLE_RULE_ID: &str = "causeway-recordings";
/// Name of the inline policy that reads the auth-key secret.
pub const SECRET_POLICY_NAME: &str = "causeway-auth-key";
/// What a secret deploy filled with a minted key holds once the instances
/// joined and the key was revoked: not a key, so an appliance that reads
/// it is refused by control, and the next deploy that launches an
/// instance knows to mint a new one.
pub const RETIRED_AUTH_KEY: &str = "retired: the instances joined and the key was revoked; the next provisioner deploy that launches an instance mints a new one";
/// Name of the inline policy that lets a subnet router without SNAT point
/// the tailnet's return route at itself.
pub const RETURN_ROUTE_POLICY_NAME: &str = "causeway-return-route";
/// Name of the inline policy that writes recordings.
pub const RECORDINGS_POLICY_NAME: &str = "causeway-recordings";
/// The device name control's state volume is attached as. On Nitro
/// instances it shows up as an NVMe disk whatever the name; the image finds
/// it by the volume ID the user data names (`state_volume`), which is the
/// disk's NVMe serial number, and mounts it as [`CONTROL_STATE_DIR`].
pub const STATE_VOLUME_DEVICE: &str = "/dev/sdf";
/// Control's `state_dir`: the appliance's state directory, which is its
/// state volume.
pub const CONTROL_STATE_DIR: &str = "/var/lib/causeway";
/// Days after which incomplete multipart uploads are aborted.
pub const ABORT_MPU_DAYS: i32 = 7;

/// The names of a deployment's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// Deployment.
    pub deployment: DeploymentName,
    /// Role.
    pub role: Role,
}

impl Names {
    /// Names for `deployment`'s `role`.
    pub fn new(deployment: DeploymentName, role: Role) -> Self {
        Self { deployment, role }
    }

    /// `causeway-NAME-ROLE`: security group, launch template, IAM role and
    /// instance profile, and a single instance.
    pub fn base(&self) -> String {
        format!("causeway-{}-{}", self.deployment, self.role)
    }

    /// The `Name` of instance `index` (`-0`, `-1` only for an HA pair).
    pub fn instance(&self, index: usize, ha: bool) -> String {
        if ha {
            format!("{}-{index}", self.base())
        } else {
            self.base()
        }
    }

    /// Control's state volume: `causeway-NAME-ROLE-state`.
    pub fn state_volume(&self) -> String {
        format!("{}-state", self.base())
    }

    /// The auth key's secret: `causeway/NAME/ROLE-authkey`.
    pub fn secret(&self) -> String {
        format!("causeway/{}/{}-authkey", self.deployment, self.role)
    }

    /// An exit node's egress interface and its security group:
    /// `causeway-NAME-ROLE-egress`.
    pub fn egress(&self) -> String {
        format!("{}-egress", self.base())
    }

    /// The resolver endpoint's security group.
    pub fn dns_security_group(&self) -> String {
        format!("causeway-{}-dns", self.deployment)
    }

    /// The resolver endpoint.
    pub fn resolver_endpoint(&self) -> String {
        format!("causeway-{}-dns", self.deployment)
    }

    /// The recordings bucket, unless `--bucket` names one.
    pub fn bucket(&self, account: &str) -> String {
        format!("causeway-{}-recordings-{account}", self.deployment)
    }

    /// The contract's tags, with `Name`.
    pub fn tags(&self, name: &str) -> Vec<(String, String)> {
        vec![
            (TAG_DEPLOYMENT.to_owned(), self.deployment.to_string()),
            (TAG_ROLE.to_owned(), self.role.to_string()),
            ("Name".to_owned(), name.to_owned()),
        ]
    }
}

/// Refuses to take over a resource that has our name but not our
/// deployment's tag: another deployment's, or nobody's. A bucket without
/// the tag is ours to tag (`--bucket` may name one made beforehand).
pub fn check_owner(
    tags: &BTreeMap<String, String>,
    deployment: &str,
    kind: &str,
    name: &str,
) -> anyhow::Result<()> {
    match tags.get(TAG_DEPLOYMENT) {
        Some(d) if d == deployment => Ok(()),
        Some(d) => anyhow::bail!(
            "{kind} {name} belongs to deployment {d:?} ({TAG_DEPLOYMENT}={d}); refusing to take it over"
        ),
        None if kind == "bucket" => Ok(()),
        None => anyhow::bail!(
            "{kind} {name} exists but is not tagged {TAG_DEPLOYMENT}={deployment}; refusing to take it over"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(role: Role) -> Names {
        Names::new("prod".parse().expect("valid"), role)
    }

    #[test]
    fn names_follow_the_contract() {
        let n = names(Role::SubnetRouter);
        assert_eq!(n.base(), "causeway-prod-subnet-router");
        assert_eq!(n.instance(1, true), "causeway-prod-subnet-router-1");
        assert_eq!(n.instance(0, false), "causeway-prod-subnet-router");
        assert_eq!(n.secret(), "causeway/prod/subnet-router-authkey");
        assert_eq!(
            n.bucket("123456789012"),
            "causeway-prod-recordings-123456789012"
        );
        assert_eq!(n.dns_security_group(), "causeway-prod-dns");
        assert_eq!(
            names(Role::Control).state_volume(),
            "causeway-prod-control-state"
        );
        let tags = n.tags("x");
        assert!(tags.contains(&("causeway:deployment".into(), "prod".into())));
        assert!(tags.contains(&("causeway:role".into(), "subnet-router".into())));
    }

    #[test]
    fn a_resource_of_another_deployment_or_of_nobody_is_not_taken_over() {
        let tagged = |d: &str| BTreeMap::from([(TAG_DEPLOYMENT.to_owned(), d.to_owned())]);
        assert!(check_owner(&tagged("prod"), "prod", "secret", "s").is_ok());
        let other = check_owner(&tagged("dev"), "prod", "secret", "s").expect_err("another's");
        assert!(
            other.to_string().contains("belongs to deployment \"dev\""),
            "{other}"
        );
        let nobody = check_owner(&BTreeMap::new(), "prod", "IAM role", "r").expect_err("untagged");
        assert!(
            nobody
                .to_string()
                .contains("is not tagged causeway:deployment=prod"),
            "{nobody}"
        );
        assert!(check_owner(&BTreeMap::new(), "prod", "bucket", "b").is_ok());
    }
}
