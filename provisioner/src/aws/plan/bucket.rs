//! The recordings bucket and the settings the contract manages on it.

use super::{Action, Planned};
use crate::aws::observe::BucketSeen;
use crate::aws::report::Change;
use crate::aws::spec::{self, Lifecycle, LifecycleRule, check_owner};

/// What the recordings bucket should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketWanted<'a> {
    /// Its name.
    pub name: &'a str,
    /// The deployment owning it.
    pub deployment: &'a str,
    /// The contract's tags.
    pub tags: &'a [(String, String)],
    /// `--kms-key` (default SSE-S3).
    pub kms_key: Option<&'a str>,
    /// The lifecycle days.
    pub lifecycle: Lifecycle,
}

/// The bucket and each setting the contract manages on it: tags, public
/// access block, default encryption, TLS-only policy, lifecycle.
pub fn bucket(seen: &BucketSeen, want: &BucketWanted<'_>) -> anyhow::Result<Planned> {
    let mut p = Planned::default();
    let name = want.name;
    let settings = seen.settings.as_ref();
    if let Some(s) = settings {
        check_owner(&s.tags, want.deployment, "bucket", name)?;
    }
    if !seen.exists {
        p.act(Action::CreateBucket);
    }
    let tagged = settings.is_some_and(|s| want.tags.iter().all(|(k, v)| s.tags.get(k) == Some(v)));
    let change = |ok: bool| match (seen.exists, ok) {
        (false, _) => Change::Create,
        (true, true) => Change::Unchanged,
        (true, false) => Change::Update,
    };
    let setting = |p: &mut Planned, kind, ok, action, detail: Option<String>| {
        let c = change(ok);
        if c != Change::Unchanged {
            p.act(action);
        }
        p.item(kind, name, c, detail);
    };
    setting(&mut p, "bucket", tagged, Action::TagBucket, None);
    setting(
        &mut p,
        "bucket public access block",
        settings.is_some_and(|s| s.public_access_blocked),
        Action::BlockPublicAccess,
        Some("all four settings on".into()),
    );
    let want_enc = match want.kms_key {
        Some(k) => ("aws:kms".to_owned(), Some(k.to_owned())),
        None => ("AES256".to_owned(), None),
    };
    setting(
        &mut p,
        "bucket encryption",
        settings.is_some_and(|s| s.encryption.as_ref() == Some(&want_enc)),
        Action::EncryptBucket,
        Some(want_enc.0.clone()),
    );
    let policy = spec::tls_only_bucket_policy(name);
    setting(
        &mut p,
        "bucket policy",
        settings
            .and_then(|s| s.policy.as_deref())
            .is_some_and(|s| spec::same_policy(s, &policy)),
        Action::PutBucketPolicy { policy },
        Some("deny aws:SecureTransport=false".into()),
    );
    let l = want.lifecycle;
    let rule = LifecycleRule::wanted(&l);
    setting(
        &mut p,
        "bucket lifecycle",
        settings.is_some_and(|s| s.lifecycle == std::slice::from_ref(&rule)),
        Action::PutLifecycle { rule },
        Some(format!(
            "STANDARD_IA after {} d, GLACIER after {} d, expire after {} d, abort uploads after {} d",
            l.ia_days, l.archive_days, l.expire_days, l.abort_multipart_days
        )),
    );
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::api::BucketSettings;
    use crate::aws::plan::samples::{DEP, actions, ours};

    fn bucket_wanted<'a>(tags: &'a [(String, String)]) -> BucketWanted<'a> {
        BucketWanted {
            name: "rec",
            deployment: DEP,
            tags,
            kms_key: None,
            lifecycle: Lifecycle::new(30, 90, 365).expect("valid"),
        }
    }

    #[test]
    fn a_new_bucket_gets_every_setting_and_a_drifted_one_only_the_fix() {
        let tags = vec![(spec::TAG_DEPLOYMENT.to_owned(), DEP.to_owned())];
        let absent = BucketSeen {
            exists: false,
            settings: None,
        };
        let p = bucket(&absent, &bucket_wanted(&tags)).expect("ok");
        assert_eq!(p.actions.len(), 6);
        assert_eq!(p.actions[0], Action::CreateBucket);
        assert!(p.items.iter().all(|i| i.change == Change::Create));

        let want = bucket_wanted(&tags);
        let drifted = BucketSeen {
            exists: true,
            settings: Some(BucketSettings {
                tags: ours(),
                public_access_blocked: true,
                encryption: Some(("aws:kms".into(), Some("k".into()))),
                policy: Some(spec::tls_only_bucket_policy("rec")),
                lifecycle: vec![LifecycleRule::wanted(&want.lifecycle)],
            }),
        };
        let p = bucket(&drifted, &want).expect("ok");
        assert_eq!(actions(&p), [&Action::EncryptBucket]);
        assert_eq!(
            p.items
                .iter()
                .filter(|i| i.change == Change::Update)
                .map(|i| i.kind)
                .collect::<Vec<_>>(),
            ["bucket encryption"]
        );
    }
}
