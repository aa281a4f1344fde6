//! The deployment name, which every resource of a deployment is named after.

use std::fmt;
use std::str::FromStr;

/// Longest accepted deployment name (docs/reference/aws-contract.md): cloud
/// resource names such as `causeway-NAME-app-connector` derive from it.
pub const MAX_NAME_LEN: usize = 24;

/// Longest name `--cloud local` accepts: `cw-NAME-pub` and the temporary
/// veth names `cw-NAME-0a` must fit Linux's 15-byte interface-name limit.
pub const LOCAL_MAX_NAME_LEN: usize = 8;

/// A validated deployment name: 1–24 of `a-z`, `0-9`, `-`, starting with a
/// letter and not ending with `-` (`--cloud local`: at most 8, see
/// [`DeploymentName::check_local`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeploymentName(String);

/// Why a deployment name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("deployment name is empty; expected 1-{MAX_NAME_LEN} characters of a-z, 0-9 and '-'")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error(
        "deployment name {0:?} is {1} characters long; at most {MAX_NAME_LEN} are allowed (resource names derive from it)"
    )]
    TooLong(String, usize),
    /// The name holds a character outside `a-z0-9-`.
    #[error(
        "deployment name {0:?} contains {1:?}; only lowercase letters a-z, digits 0-9 and '-' are allowed"
    )]
    BadChar(String, char),
    /// The name starts or ends with `-`.
    #[error("deployment name {0:?} must not start or end with '-'")]
    EdgeHyphen(String),
    /// The name starts with a digit.
    #[error("deployment name {0:?} must start with a letter a-z")]
    LeadingDigit(String),
    /// The name is too long for `--cloud local`.
    #[error(
        "deployment name {0:?} is {1} characters long; --cloud local allows at most {LOCAL_MAX_NAME_LEN} (namespace and interface names derive from it)"
    )]
    TooLongForLocal(String, usize),
}

impl DeploymentName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks the stricter length limit of `--cloud local`.
    pub fn check_local(&self) -> Result<(), NameError> {
        if self.0.len() > LOCAL_MAX_NAME_LEN {
            return Err(NameError::TooLongForLocal(self.0.clone(), self.0.len()));
        }
        Ok(())
    }
}

impl Default for DeploymentName {
    fn default() -> Self {
        Self("demo".to_owned())
    }
}

impl FromStr for DeploymentName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::BadChar(s.to_owned(), c));
        }
        if s.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong(s.to_owned(), s.len()));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(NameError::EdgeHyphen(s.to_owned()));
        }
        if s.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(NameError::LeadingDigit(s.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for DeploymentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_lowercase_digits_and_inner_hyphens() {
        let name: DeploymentName = "e2e-01".parse().expect("valid name");
        assert_eq!(name.as_str(), "e2e-01");
        assert_eq!(DeploymentName::default().as_str(), "demo");
    }

    #[test]
    fn rejects_bad_names_with_the_reason() {
        assert_eq!("".parse::<DeploymentName>(), Err(NameError::Empty));
        assert_eq!(
            "Demo".parse::<DeploymentName>(),
            Err(NameError::BadChar("Demo".into(), 'D'))
        );
        assert_eq!(
            "a_b".parse::<DeploymentName>(),
            Err(NameError::BadChar("a_b".into(), '_'))
        );
        let long = "a".repeat(25);
        assert_eq!(
            long.parse::<DeploymentName>(),
            Err(NameError::TooLong(long.clone(), 25))
        );
        assert_eq!(
            "-ab".parse::<DeploymentName>(),
            Err(NameError::EdgeHyphen("-ab".into()))
        );
        assert_eq!(
            "1ab".parse::<DeploymentName>(),
            Err(NameError::LeadingDigit("1ab".into()))
        );
        let msg = long.parse::<DeploymentName>().map_err(|e| e.to_string());
        assert!(msg.is_err_and(|m| m.contains("at most 24")));
    }

    #[test]
    fn local_names_are_at_most_eight_characters() {
        let name: DeploymentName = "abcdefghi".parse().expect("valid for the cloud");
        assert_eq!(
            name.check_local(),
            Err(NameError::TooLongForLocal("abcdefghi".into(), 9))
        );
        let short: DeploymentName = "abcdefgh".parse().expect("valid");
        assert_eq!(short.check_local(), Ok(()));
    }
}
