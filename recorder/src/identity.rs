//! Who sent a recording, or asks to see one: the tailnet identity behind a
//! source address, as control describes it in the netmap of the node the
//! recorder runs beside. A peer's inner source address is checked against
//! the addresses control gave that peer before a packet reaches the
//! recorder, so the address names the node.

use std::fmt;
use std::net::IpAddr;

/// A tailnet node, as control describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Its tailnet name, unique in the tailnet: the node part of the
    /// storage key of every recording it sends.
    pub node: String,
    /// The user who owns it (`alice@example.com`); none for a tagged node.
    pub user: Option<String>,
    /// Its tags (`tag:ops`).
    pub tags: Vec<String>,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.node)?;
        match (&self.user, self.tags.is_empty()) {
            (Some(user), _) => write!(f, " ({user})"),
            (None, false) => write!(f, " ({})", self.tags.join(", ")),
            (None, true) => Ok(()),
        }
    }
}

/// Answers "which node owns this tailnet address". The appliance answers
/// from its node's netmap; a recorder without a node has none.
pub trait WhoIs: Send + Sync + fmt::Debug {
    /// The node whose own tailnet addresses include `addr` (not one that
    /// merely routes to it), or `None`.
    fn who_is(&self, addr: IpAddr) -> Option<Identity>;
}

/// Checks one `[recorder.web] viewers` entry: a user (`alice@example.com`)
/// or a tag (`tag:ops`).
pub fn check_viewer(entry: &str) -> Result<(), String> {
    let ok = match entry.strip_prefix("tag:") {
        Some(tag) => !tag.is_empty() && tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
        None => {
            matches!(entry.split_once('@'), Some((name, domain)) if !name.is_empty() && !domain.is_empty() && !entry.contains(char::is_whitespace))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "recorder web.viewers entry {entry:?}: expected a user (alice@example.com) or a tag (tag:ops); groups live in control's policy, which the recorder does not see"
        ))
    }
}

/// Whether `viewers` names `who`: its user, or one of its tags.
pub fn may_view(viewers: &[String], who: &Identity) -> bool {
    viewers.iter().any(|v| {
        if v.starts_with("tag:") {
            who.tags.contains(v)
        } else {
            who.user.as_deref() == Some(v.as_str())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(user: Option<&str>, tags: &[&str]) -> Identity {
        Identity {
            node: "laptop".into(),
            user: user.map(str::to_owned),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    #[test]
    fn viewers_name_users_and_tags_and_nothing_else() {
        let viewers = vec!["alice@example.com".to_owned(), "tag:ops".to_owned()];
        assert!(may_view(&viewers, &node(Some("alice@example.com"), &[])));
        assert!(may_view(&viewers, &node(None, &["tag:web", "tag:ops"])));
        assert!(!may_view(&viewers, &node(Some("bob@example.com"), &[])));
        assert!(!may_view(&viewers, &node(None, &["tag:web"])));
        // A user named like a tag, or a tag named like a user, is not them.
        assert!(!may_view(
            &["tag:ops".to_owned()],
            &node(Some("tag:ops"), &[])
        ));
        assert!(!may_view(
            &[],
            &node(Some("alice@example.com"), &["tag:ops"])
        ));
    }

    #[test]
    fn a_viewer_entry_is_a_user_or_a_tag() {
        for good in ["alice@example.com", "tag:ops", "tag:db-admins"] {
            check_viewer(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in [
            "",
            "alice",
            "group:dba",
            "tag:",
            "tag:a b",
            "@example.com",
            "alice@",
            "a b@c",
        ] {
            let err = check_viewer(bad).expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
