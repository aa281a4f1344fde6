//! The auth key's secret.

use super::{Action, Planned};
use crate::aws::api::SecretInfo;
use crate::aws::observe::SecretSeen;
use crate::aws::report::Change;
use crate::aws::spec::check_owner;

/// The auth key's secret: created (from the file, or minted by control),
/// restored from a scheduled deletion, or given the file's key.
pub fn secret(
    info: Option<&SecretInfo>,
    seen: &SecretSeen,
    name: &str,
    deployment: &str,
    from_file: bool,
) -> anyhow::Result<Planned> {
    let mut p = Planned::default();
    if let Some(s) = info {
        check_owner(&s.tags, deployment, "secret", name)?;
    }
    match info {
        Some(s) if s.deleted => {
            p.act(Action::RestoreSecret);
            p.item(
                "secret",
                name,
                Change::Update,
                Some("restored from scheduled deletion".into()),
            );
        }
        Some(_) if seen.holds_file_key == Some(false) => {
            p.act(Action::PutSecretValue);
            p.item(
                "secret",
                name,
                Change::Update,
                Some("value replaced from --auth-key-file".into()),
            );
        }
        Some(_) => p.item("secret", name, Change::Unchanged, None),
        None => {
            p.act(Action::CreateSecret);
            let source = if from_file {
                "from --auth-key-file"
            } else {
                "minted by control's admin API"
            };
            p.item("secret", name, Change::Create, Some(source.into()));
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::plan::samples::{DEP, actions, changes, ours};
    use crate::aws::spec;
    use std::collections::BTreeMap;

    #[test]
    fn a_missing_secret_is_created_and_a_deleted_one_restored() {
        let none = SecretSeen {
            holds_file_key: None,
        };
        let created = secret(None, &none, "causeway/prod/relay-authkey", DEP, true).expect("ok");
        assert_eq!(actions(&created), [&Action::CreateSecret]);
        assert_eq!(
            created.items[0].detail.as_deref(),
            Some("from --auth-key-file")
        );

        let mut info = SecretInfo {
            arn: "arn:s".into(),
            name: "causeway/prod/relay-authkey".into(),
            deleted: true,
            tags: ours(),
        };
        let restored = secret(Some(&info), &none, &info.name.clone(), DEP, false).expect("ok");
        assert_eq!(actions(&restored), [&Action::RestoreSecret]);

        info.deleted = false;
        let differs = SecretSeen {
            holds_file_key: Some(false),
        };
        let replaced = secret(Some(&info), &differs, "s", DEP, true).expect("ok");
        assert_eq!(actions(&replaced), [&Action::PutSecretValue]);
        let same = SecretSeen {
            holds_file_key: Some(true),
        };
        let kept = secret(Some(&info), &same, "s", DEP, true).expect("ok");
        assert!(kept.actions.is_empty());
        assert_eq!(changes(&kept), [("secret", Change::Unchanged)]);
    }

    #[test]
    fn a_secret_of_another_deployment_is_refused_with_no_action() {
        let info = SecretInfo {
            arn: "arn:s".into(),
            name: "s".into(),
            deleted: false,
            tags: BTreeMap::from([(spec::TAG_DEPLOYMENT.to_owned(), "dev".to_owned())]),
        };
        let seen = SecretSeen {
            holds_file_key: Some(false),
        };
        let err = secret(Some(&info), &seen, "s", DEP, true).expect_err("not ours");
        assert!(
            err.to_string().contains("belongs to deployment \"dev\""),
            "{err}"
        );
    }
}
