//! The auth key's secret.

use super::{Action, Planned};
use crate::aws::api::SecretInfo;
use crate::aws::observe::{MintedSecret, SecretSeen};
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

/// Before instances are launched from a secret deploy fills with minted
/// keys: a new key when `launching` and the secret holds none an instance
/// could join with (retired, revoked, expired). Nothing for a secret this
/// run creates, since creating it mints one.
pub fn refresh_key(
    held: &MintedSecret,
    launching: bool,
    name: &str,
    expiry_seconds: u64,
) -> Planned {
    let mut p = Planned::default();
    if !launching || held.joins() || *held == MintedSecret::Absent {
        return p;
    }
    let was = match held {
        MintedSecret::Retired => "retired",
        MintedSecret::Key { .. } => "no longer usable",
        MintedSecret::Absent | MintedSecret::Other => "not a key",
    };
    p.act(Action::MintKey);
    p.item(
        "secret",
        name,
        Change::Update,
        Some(format!(
            "new auth key minted for the instances launched (expires in {expiry_seconds} s); the old value was {was}"
        )),
    );
    p
}

/// Once every instance joined: revoke the minted key the secret holds and
/// replace it with [`crate::aws::spec::RETIRED_AUTH_KEY`]. Nothing when it
/// is retired already.
pub fn retire_key(held: &MintedSecret, name: &str) -> Planned {
    let mut p = Planned::default();
    let id = match held {
        MintedSecret::Absent | MintedSecret::Retired => return p,
        MintedSecret::Key { id, .. } => Some(id.clone()),
        MintedSecret::Other => None,
    };
    let detail = match &id {
        Some(id) => format!(
            "auth key {id} revoked in control and cleared from the secret: the instances joined"
        ),
        None => "cleared (it held no key control issued): the instances joined".to_owned(),
    };
    p.act(Action::RetireKey { id });
    p.item("secret", name, Change::Update, Some(detail));
    p
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
    fn a_key_is_minted_only_for_launches_from_a_secret_no_instance_could_join_with() {
        let usable = MintedSecret::Key {
            id: "0123456789ab".into(),
            usable: Some(true),
        };
        let revoked = MintedSecret::Key {
            id: "0123456789ab".into(),
            usable: Some(false),
        };
        for held in [&MintedSecret::Retired, &revoked, &MintedSecret::Other] {
            let p = refresh_key(held, true, "s", 3600);
            assert_eq!(actions(&p), [&Action::MintKey], "{held:?}");
            assert_eq!(changes(&p), [("secret", Change::Update)]);
            assert!(refresh_key(held, false, "s", 3600).actions.is_empty());
        }
        for held in [&usable, &MintedSecret::Absent] {
            assert!(
                refresh_key(held, true, "s", 3600).actions.is_empty(),
                "{held:?}"
            );
        }
        let p = refresh_key(&MintedSecret::Retired, true, "s", 1800);
        assert!(
            p.items[0]
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("expires in 1800 s") && d.contains("retired")),
            "{:?}",
            p.items
        );
    }

    #[test]
    fn a_joined_deployment_retires_its_key_once() {
        let held = MintedSecret::Key {
            id: "0123456789ab".into(),
            usable: Some(true),
        };
        let p = retire_key(&held, "s");
        assert_eq!(
            actions(&p),
            [&Action::RetireKey {
                id: Some("0123456789ab".into())
            }]
        );
        assert_eq!(
            actions(&retire_key(&MintedSecret::Other, "s")),
            [&Action::RetireKey { id: None }]
        );
        for done in [MintedSecret::Retired, MintedSecret::Absent] {
            let p = retire_key(&done, "s");
            assert!(p.actions.is_empty() && p.items.is_empty(), "{done:?}");
        }
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
