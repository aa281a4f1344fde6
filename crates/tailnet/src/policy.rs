//! Tailnet policy, written in huJSON (JSON with comments and trailing
//! commas). This module understands `autoApprovers`; every other top-level
//! section (`acls`, `groups`, `tagOwners`, `ssh`, `tests`, …) is kept as
//! parsed JSON for the policy compiler, not rejected.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde_json::Value;

use crate::auth_keys::validate_tag;

/// A parsed policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Policy {
    /// Who may have which routes approved without an admin.
    pub auto_approvers: AutoApprovers,
    /// Every other top-level section, as written.
    pub other: BTreeMap<String, Value>,
}

/// `autoApprovers`: routes (prefix → approvers) and exit nodes (approvers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AutoApprovers {
    /// Advertised prefixes within a key are approved for nodes matching an
    /// approver of that key.
    pub routes: BTreeMap<IpNet, Vec<Approver>>,
    /// Nodes matching one of these may have the default routes approved.
    pub exit_node: Vec<Approver>,
}

/// One entry of an approver list.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Approver {
    /// `tag:NAME`: nodes carrying that tag.
    Tag(String),
    /// `group:NAME`: members of a group (resolved once users exist).
    Group(String),
    /// `user@domain`: nodes owned by that user (once users exist).
    User(String),
}

/// Why a policy was refused; the message names the offending key or value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not huJSON.
    #[error("policy is not valid huJSON: {0}")]
    Syntax(String),
    /// Valid huJSON but the wrong shape.
    #[error("policy: {0}")]
    Invalid(String),
}

impl Policy {
    /// Parses huJSON policy text.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let value: Value = json5::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(invalid("the top level must be an object"));
        };
        let mut policy = Policy::default();
        for (key, value) in map {
            if key == "autoApprovers" {
                policy.auto_approvers = parse_auto_approvers(&value)?;
            } else {
                policy.other.insert(key, value);
            }
        }
        Ok(policy)
    }

    /// Whether a node with `tags` may have `prefix` approved automatically.
    pub fn auto_approves(&self, prefix: &IpNet, tags: &[String]) -> bool {
        let matches = |approvers: &[Approver]| {
            approvers.iter().any(|a| match a {
                Approver::Tag(t) => tags.iter().any(|have| have == t),
                // Nodes have no owning user yet: these match nothing.
                Approver::Group(_) | Approver::User(_) => false,
            })
        };
        if is_default_route(prefix) {
            return matches(&self.auto_approvers.exit_node);
        }
        self.auto_approvers
            .routes
            .iter()
            .any(|(allowed, approvers)| allowed.contains(prefix) && matches(approvers))
    }
}

/// Whether `prefix` is `0.0.0.0/0` or `::/0` (exit-node routes).
pub fn is_default_route(prefix: &IpNet) -> bool {
    prefix.prefix_len() == 0
}

fn invalid(message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid(message.into())
}

fn parse_auto_approvers(value: &Value) -> Result<AutoApprovers, PolicyError> {
    let Value::Object(map) = value else {
        return Err(invalid("autoApprovers must be an object"));
    };
    let mut out = AutoApprovers::default();
    for (key, value) in map {
        match key.as_str() {
            "routes" => {
                let Value::Object(routes) = value else {
                    return Err(invalid(
                        "autoApprovers.routes must be an object of prefix → approvers",
                    ));
                };
                for (prefix_text, approvers) in routes {
                    let prefix: IpNet = prefix_text.parse().map_err(|_| {
                        invalid(format!("autoApprovers.routes: {prefix_text:?} is not an IP prefix (like 10.0.0.0/8)"))
                    })?;
                    if prefix.trunc() != prefix {
                        return Err(invalid(format!(
                            "autoApprovers.routes: {prefix_text} has host bits set; did you mean {}?",
                            prefix.trunc()
                        )));
                    }
                    let context = format!("autoApprovers.routes[{prefix_text:?}]");
                    out.routes
                        .insert(prefix, parse_approvers(approvers, &context)?);
                }
            }
            "exitNode" => out.exit_node = parse_approvers(value, "autoApprovers.exitNode")?,
            other => {
                return Err(invalid(format!(
                    "autoApprovers: unknown key {other:?} (expected \"routes\" or \"exitNode\")"
                )));
            }
        }
    }
    Ok(out)
}

fn parse_approvers(value: &Value, context: &str) -> Result<Vec<Approver>, PolicyError> {
    let Value::Array(items) = value else {
        return Err(invalid(format!("{context} must be a list of approvers")));
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(s) = item else {
            return Err(invalid(format!(
                "{context}: approver {item} must be a string"
            )));
        };
        let approver = if s.starts_with("tag:") {
            validate_tag(s).map_err(|e| invalid(format!("{context}: {e}")))?;
            Approver::Tag(s.clone())
        } else if let Some(name) = s.strip_prefix("group:") {
            if name.is_empty() {
                return Err(invalid(format!("{context}: empty group name in {s:?}")));
            }
            Approver::Group(s.clone())
        } else if s.contains('@') {
            Approver::User(s.clone())
        } else {
            return Err(invalid(format!(
                "{context}: approver {s:?} is neither tag:NAME, group:NAME nor a user (user@domain)"
            )));
        };
        out.push(approver);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = r#"{
        // subnet routers may publish VPC ranges
        "autoApprovers": {
            "routes": {
                "198.19.0.0/16": ["tag:router", "alice@example.com",],
            },
            "exitNode": ["tag:exit"],
        },
        "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
        "tagOwners": {"tag:router": []},
    }"#;

    fn net(s: &str) -> IpNet {
        s.parse().expect("valid prefix")
    }

    #[test]
    fn parses_hujson_and_keeps_other_sections() {
        let policy = Policy::parse(SAMPLE).expect("valid policy");
        assert_eq!(
            policy.auto_approvers.routes.get(&net("198.19.0.0/16")),
            Some(&vec![
                Approver::Tag("tag:router".into()),
                Approver::User("alice@example.com".into())
            ])
        );
        assert_eq!(
            policy.other.keys().collect::<Vec<_>>(),
            ["acls", "tagOwners"]
        );
    }

    #[test]
    fn approves_subprefixes_for_matching_tags_only() {
        let policy = Policy::parse(SAMPLE).expect("valid policy");
        let router = vec!["tag:router".to_string()];
        assert!(policy.auto_approves(&net("198.19.1.0/24"), &router));
        assert!(!policy.auto_approves(&net("198.18.0.0/24"), &router));
        assert!(!policy.auto_approves(&net("198.19.1.0/24"), &["tag:other".to_string()]));
        assert!(!policy.auto_approves(&net("0.0.0.0/0"), &router));
        assert!(policy.auto_approves(&net("::/0"), &["tag:exit".to_string()]));
    }

    #[test]
    fn errors_name_the_offender() {
        let cases = [
            (
                r#"{"autoApprovers": {"routes": {"10.0.0.0/33": []}}}"#,
                "10.0.0.0/33",
            ),
            (
                r#"{"autoApprovers": {"routes": {"10.0.0.1/8": []}}}"#,
                "did you mean 10.0.0.0/8",
            ),
            (r#"{"autoApprovers": {"route": {}}}"#, "\"route\""),
            (
                r#"{"autoApprovers": {"routes": {"10.0.0.0/8": ["router"]}}}"#,
                "\"router\"",
            ),
            (
                r#"{"autoApprovers": {"routes": {"10.0.0.0/8": ["tag:Bad"]}}}"#,
                "tag:Bad",
            ),
            (r#"[1]"#, "top level"),
            (r#"{"#, "huJSON"),
        ];
        for (text, needle) in cases {
            let err = Policy::parse(text).expect_err(text).to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".*") {
            let _ = Policy::parse(&s);
        }
    }
}
