//! What `deploy` changes, decided from what [`super::observe`] saw and what
//! the contract wants: for each resource, the report's items and the
//! actions that make it so, one module per resource. Pure, so every
//! decision is unit-tested on made-up observations; `plan` prints the
//! items, `deploy` also applies the actions in order ([`super::deploy`]).

mod bucket;
mod control_state;
mod dns;
mod egress;
mod iam;
mod instances;
mod routing;
#[cfg(test)]
mod samples;
#[cfg(test)]
pub(crate) use self::samples::instance as samples_instance;
mod secret;
mod security_group;

pub use self::bucket::{BucketWanted, bucket};
pub use self::control_state::{ControlStateWanted, control_attachments, control_resources};
pub use self::dns::{SplitDnsPlan, resolver_endpoint, split_dns};
pub use self::egress::{EgressWanted, egress_attachments, egress_interface_tags, egress_resources};
pub use self::iam::{iam, wanted_policies};
pub use self::instances::{instances, launch_template};
pub use self::routing::routing;
pub use self::secret::{refresh_key, retire_key, secret};
pub use self::security_group::security_group;

use super::api::Address;
use super::network::Subnet;
use super::report::{Change, Item};
use super::spec::{IngressRule, LifecycleRule, TemplateData};

/// One change `deploy` makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Cancel the secret's scheduled deletion.
    RestoreSecret,
    /// Store the key from `--auth-key-file` in the secret.
    PutSecretValue,
    /// Create the secret with the key from the file, or one minted by
    /// control.
    CreateSecret,
    /// Mint a new key in control and store it in the secret, for
    /// instances about to be launched.
    MintKey,
    /// Revoke the minted key in control (`id`, when the secret holds one)
    /// and replace the secret's value with [`crate::aws::spec::RETIRED_AUTH_KEY`].
    RetireKey {
        /// The key's public id.
        id: Option<String>,
    },
    /// Create the instance role.
    CreateRole,
    /// Set inline policy `name` to `doc` (`None`: the secret's ARN is not
    /// known yet, which only a plan can meet).
    PutRolePolicy {
        /// Policy name.
        name: &'static str,
        /// The document.
        doc: Option<String>,
    },
    /// Remove an inline policy the contract does not have.
    DeleteRolePolicy {
        /// Policy name.
        name: String,
    },
    /// Create the instance profile and put the role in it.
    CreateInstanceProfile,
    /// Put the role in the existing instance profile.
    AddRoleToProfile,
    /// Create security group `name` with `rules`.
    CreateSecurityGroup {
        /// Name.
        name: String,
        /// Description.
        description: String,
        /// Inbound rules.
        rules: Vec<IngressRule>,
    },
    /// Change the inbound rules of group `id`.
    UpdateRules {
        /// `sg-…`.
        id: String,
        /// Rules to add.
        add: Vec<IngressRule>,
        /// Rules to remove.
        remove: Vec<IngressRule>,
    },
    /// Create the recordings bucket.
    CreateBucket,
    /// Tag it with the contract's tags.
    TagBucket,
    /// Block all public access.
    BlockPublicAccess,
    /// Set default encryption (SSE-KMS with `--kms-key`, else SSE-S3).
    EncryptBucket,
    /// Set the TLS-only bucket policy.
    PutBucketPolicy {
        /// The policy.
        policy: String,
    },
    /// Set the lifecycle rule.
    PutLifecycle {
        /// The rule.
        rule: LifecycleRule,
    },
    /// Create the resolver endpoint in the DNS subnets.
    CreateResolverEndpoint {
        /// Name.
        name: String,
        /// Its security group's name.
        security_group: String,
    },
    /// Set a split-DNS entry in control.
    SetSplitDns {
        /// The domain.
        domain: String,
        /// Its nameservers.
        nameservers: Vec<String>,
    },
    /// Create the launch template.
    CreateTemplate {
        /// What it holds.
        data: TemplateData,
    },
    /// Add a version to launch template `id` and make it the default.
    UpdateTemplate {
        /// `lt-…`.
        id: String,
        /// What it holds.
        data: TemplateData,
    },
    /// Launch instance `name` into `subnet` (waited for at the step's end).
    Launch {
        /// `Name`.
        name: String,
        /// Where.
        subnet: Subnet,
    },
    /// Terminate `old`, wait for it, launch `name`, wait for it: one at a
    /// time, so an HA pair always has one router up.
    Replace {
        /// `Name`.
        name: String,
        /// The instance it replaces.
        old: String,
        /// Where.
        subnet: Subnet,
    },
    /// Terminate instances that are not part of the deployment's shape.
    Terminate {
        /// `i-…`.
        ids: Vec<String>,
    },
    /// Set an instance's source/destination check.
    SetSourceDestCheck {
        /// `i-…`.
        id: String,
        /// On or off.
        on: bool,
    },
    /// Allocate control's Elastic IP.
    AllocateAddress,
    /// Associate the Elastic IP (control's, or an exit node's) with
    /// `instance` (taking it from any other).
    AssociateAddress {
        /// `i-…`.
        instance: String,
        /// Its primary interface, named when it has two (an exit node
        /// with an egress interface).
        interface: Option<String>,
    },
    /// Release an Elastic IP the deployment no longer uses.
    ReleaseAddress {
        /// The address.
        address: Address,
    },
    /// Create the egress interface in `subnet` (`--egress-subnet`), with
    /// the source/destination check off.
    CreateEgressInterface {
        /// `subnet-…`.
        subnet: String,
    },
    /// Set an interface's source/destination check.
    SetInterfaceSourceDestCheck {
        /// `eni-…`.
        id: String,
        /// On or off.
        on: bool,
    },
    /// Delete an egress interface the deployment no longer uses.
    DeleteEgressInterface {
        /// `eni-…`.
        id: String,
    },
    /// Create control's state volume in `az`.
    CreateVolume {
        /// AZ of control's subnet.
        az: String,
        /// Size in GiB.
        size_gib: i32,
    },
    /// Detach the state volume from an instance that is no longer control.
    DetachVolume {
        /// `vol-…`.
        id: String,
    },
    /// Attach the state volume to `instance` as
    /// [`crate::aws::spec::STATE_VOLUME_DEVICE`].
    AttachVolume {
        /// `i-…`.
        instance: String,
    },
    /// Add, replace or delete the tailnet route of a table.
    TailnetRoute {
        /// `rtb-…`.
        table: String,
        /// The target ENI (`None`: delete).
        eni: Option<String>,
        /// Replace an existing route.
        replace: bool,
    },
}

/// Items for the report and the actions behind them, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Planned {
    /// One per resource (or per changed part of one).
    pub items: Vec<Item>,
    /// What `deploy` does, in order.
    pub actions: Vec<Action>,
}

impl Planned {
    fn item(
        &mut self,
        kind: &'static str,
        name: impl Into<String>,
        change: Change,
        detail: Option<String>,
    ) {
        self.items.push(Item::new(kind, name, change, detail));
    }

    fn act(&mut self, action: Action) {
        self.actions.push(action);
    }

    /// Associates the Elastic IP `address` (none: allocated earlier in
    /// this deploy) with `instance` (through `interface` when named), the
    /// report saying `IP -> target`.
    fn associate_address(
        &mut self,
        name: &str,
        address: Option<&Address>,
        instance: &str,
        interface: Option<&str>,
        target: &str,
    ) {
        self.act(Action::AssociateAddress {
            instance: instance.to_owned(),
            interface: interface.map(str::to_owned),
        });
        let change = if address.is_none() {
            Change::Create
        } else {
            Change::Update
        };
        let ip = address.map_or("(new address)", |a| a.public_ip.as_str());
        self.item(
            "Elastic IP association",
            name,
            change,
            Some(format!("{ip} -> {target}")),
        );
    }
}
