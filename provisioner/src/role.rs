//! Edge roles the provisioner can deploy.

use std::fmt;

/// A role to deploy. Unknown values are rejected by the parser, naming
/// `--role` and the accepted values, before anything is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A subnet router advertising a VPC's CIDR to the tailnet, with SNAT.
    SubnetRouter,
    /// 4via6: a site's IPv4 range advertised under a site ID as an IPv6
    /// route in the tailnet's range, and translated.
    Via6,
    /// An exit node: advertises `0.0.0.0/0` and `::/0` and forwards the
    /// tailnet's internet traffic, masqueraded.
    ExitNode,
    /// An app connector: routes the addresses its domains resolve to,
    /// forwarding to them masqueraded.
    AppConnector,
    /// The SSH session recorder, with its recordings bucket (AWS only).
    Recorder,
    /// The coordination server itself (AWS only).
    Control,
    /// A relay for nodes that cannot reach each other directly (not built yet).
    Relay,
}

impl Role {
    /// The role's name as on the command line and in tags.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::SubnetRouter => "subnet-router",
            Role::Via6 => "via6",
            Role::ExitNode => "exit-node",
            Role::AppConnector => "app-connector",
            Role::Recorder => "recorder",
            Role::Control => "control",
            Role::Relay => "relay",
        }
    }

    /// Why `--cloud aws` cannot deploy the role yet (the appliance has no
    /// config section for it, or the AWS deployment does not write one):
    /// `plan` and `deploy` refuse it rather than boot a plain node under
    /// its name. `--cloud local` decides for itself (see `cli.rs`).
    pub fn not_built_yet(self) -> Option<&'static str> {
        match self {
            Role::SubnetRouter
            | Role::ExitNode
            | Role::AppConnector
            | Role::Via6
            | Role::Recorder
            | Role::Control => None,
            Role::Relay => Some("the appliance has no relay server yet"),
        }
    }

    /// The roles `--cloud aws` deploys today: those its `plan` and `deploy`
    /// accept.
    pub fn built() -> Vec<Role> {
        <Role as clap::ValueEnum>::value_variants()
            .iter()
            .copied()
            .filter(|r| r.not_built_yet().is_none())
            .collect()
    }

    /// The roles the appliance cannot run yet, refused by `plan` and `deploy`.
    pub fn not_built() -> Vec<Role> {
        <Role as clap::ValueEnum>::value_variants()
            .iter()
            .copied()
            .filter(|r| r.not_built_yet().is_some())
            .collect()
    }

    /// Whether the role forwards traffic for advertised routes (and so gets
    /// the routes in its config, and the no-SNAT return path).
    pub fn advertises_routes(self) -> bool {
        match self {
            Role::SubnetRouter | Role::Via6 | Role::ExitNode | Role::AppConnector => true,
            Role::Recorder | Role::Control | Role::Relay => false,
        }
    }

    /// Whether the role may send the tailnet's internet traffic out of a
    /// second interface (`--egress-subnet`): an exit node (the appliance's
    /// `[app_connector]` has no egress interface).
    pub fn takes_egress_subnet(self) -> bool {
        match self {
            Role::ExitNode => true,
            Role::AppConnector
            | Role::SubnetRouter
            | Role::Via6
            | Role::Recorder
            | Role::Control
            | Role::Relay => false,
        }
    }

    /// Whether the role is a mesh node that joins with an auth key
    /// (everything but control, which issues them).
    pub fn needs_auth_key(self) -> bool {
        match self {
            Role::Control => false,
            Role::SubnetRouter
            | Role::Via6
            | Role::ExitNode
            | Role::AppConnector
            | Role::Recorder
            | Role::Relay => true,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn display_matches_the_command_line_spelling() {
        for role in Role::value_variants() {
            let parsed = Role::from_str(role.as_str(), false).expect("own spelling parses");
            assert_eq!(parsed, *role);
        }
        assert_eq!(Role::ExitNode.to_string(), "exit-node");
    }

    #[test]
    fn only_the_roles_the_appliance_runs_are_built() {
        assert_eq!(
            Role::built(),
            [
                Role::SubnetRouter,
                Role::Via6,
                Role::ExitNode,
                Role::AppConnector,
                Role::Recorder,
                Role::Control
            ]
        );
        assert_eq!(Role::not_built(), [Role::Relay]);
    }
}
