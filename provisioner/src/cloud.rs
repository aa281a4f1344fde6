//! The clouds a deployment can target, and the small interface each one
//! implements. `local` lives in [`crate::local`], `aws` in [`crate::aws`];
//! `azure` is parsed but not built yet: it will get its own module behind
//! the same [`Provider`] trait.

use std::fmt;

use crate::console::OutputFormat;

/// The cloud a command targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Cloud {
    /// Network namespaces on this machine stand in for a cloud (the default).
    #[default]
    Local,
    /// Amazon Web Services (docs/aws.md).
    Aws,
    /// Microsoft Azure (not implemented yet).
    Azure,
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cloud::Local => "local",
            Cloud::Aws => "aws",
            Cloud::Azure => "azure",
        })
    }
}

/// Whether the thing asked about is as it should be; maps to the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done, or healthy.
    Healthy,
    /// Inspected fine, but not healthy (or not deployed).
    Unhealthy,
}

/// What every cloud implements. Each method prints its own result in the
/// requested format.
pub trait Provider {
    /// Prints what `deploy` would create or change; changes nothing.
    fn plan(&self, format: OutputFormat) -> anyhow::Result<Verdict>;
    /// Creates or repairs the deployment until it is healthy, then proves it.
    fn deploy(&self, format: OutputFormat) -> anyhow::Result<Verdict>;
    /// Prints what runs and whether it is healthy.
    fn status(&self, format: OutputFormat) -> anyhow::Result<Verdict>;
    /// Removes exactly what `deploy` created, then checks nothing is left.
    fn destroy(&self, format: OutputFormat) -> anyhow::Result<Verdict>;
}

/// Errors choosing a cloud.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// The cloud is accepted by the parser but has no implementation yet
    /// (Azure).
    #[error("--cloud {0} is not implemented yet; --cloud local and --cloud aws work today")]
    NotImplemented(Cloud),
}
