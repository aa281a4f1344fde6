//! Edge roles the provisioner can deploy.

use std::fmt;

/// A role to deploy. Unknown values are rejected by the parser, naming
/// `--role` and the accepted values, before anything is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A subnet router advertising a VPC's CIDR to the tailnet, with SNAT.
    SubnetRouter,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::SubnetRouter => f.write_str("subnet-router"),
        }
    }
}
