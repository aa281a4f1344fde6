//! The recordings bucket's lifecycle: the days chosen with the flags, and
//! the one rule they make.

use serde::Serialize;

use super::{ABORT_MPU_DAYS, LIFECYCLE_RULE_ID};

/// The recordings lifecycle: days to Standard-IA, to Glacier, to expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Lifecycle {
    /// Days until `STANDARD_IA`.
    pub ia_days: i32,
    /// Days until `GLACIER`.
    pub archive_days: i32,
    /// Days until deletion.
    pub expire_days: i32,
    /// Days until incomplete multipart uploads are aborted.
    pub abort_multipart_days: i32,
}

impl Lifecycle {
    /// Checks S3's rules (Standard-IA after at least 30 days) and the order
    /// IA < archive < expiry; errors name the flags.
    pub fn new(ia_days: i32, archive_days: i32, expire_days: i32) -> Result<Self, String> {
        if ia_days < 30 {
            return Err(format!(
                "--ia-days {ia_days}: S3 moves objects to STANDARD_IA after at least 30 days"
            ));
        }
        if archive_days <= ia_days {
            return Err(format!(
                "--archive-days {archive_days} must be greater than --ia-days {ia_days}"
            ));
        }
        if expire_days <= archive_days {
            return Err(format!(
                "--expire-days {expire_days} must be greater than --archive-days {archive_days}"
            ));
        }
        Ok(Self {
            ia_days,
            archive_days,
            expire_days,
            abort_multipart_days: ABORT_MPU_DAYS,
        })
    }
}

/// A bucket lifecycle rule, reduced to what we set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleRule {
    /// Id.
    pub id: String,
    /// Enabled.
    pub enabled: bool,
    /// `(days, storage class)`, sorted.
    pub transitions: Vec<(i32, String)>,
    /// Expiration days.
    pub expire_days: Option<i32>,
    /// Abort incomplete multipart uploads after days.
    pub abort_days: Option<i32>,
}

impl LifecycleRule {
    /// The rule the contract asks for.
    pub fn wanted(l: &Lifecycle) -> Self {
        Self {
            id: LIFECYCLE_RULE_ID.to_owned(),
            enabled: true,
            transitions: vec![
                (l.ia_days, "STANDARD_IA".to_owned()),
                (l.archive_days, "GLACIER".to_owned()),
            ],
            expire_days: Some(l.expire_days),
            abort_days: Some(l.abort_multipart_days),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_days_are_checked_naming_the_flag() {
        assert_eq!(
            Lifecycle::new(30, 90, 365).expect("defaults"),
            Lifecycle {
                ia_days: 30,
                archive_days: 90,
                expire_days: 365,
                abort_multipart_days: 7
            }
        );
        assert!(
            Lifecycle::new(10, 90, 365)
                .expect_err("too early")
                .contains("--ia-days")
        );
        assert!(
            Lifecycle::new(30, 30, 365)
                .expect_err("order")
                .contains("--archive-days")
        );
        assert!(
            Lifecycle::new(30, 90, 90)
                .expect_err("order")
                .contains("--expire-days")
        );
    }

    #[test]
    fn the_wanted_rule_moves_then_expires_and_aborts_uploads() {
        let rule = LifecycleRule::wanted(&Lifecycle::new(30, 90, 365).expect("valid"));
        assert_eq!(rule.id, "causeway-recordings");
        assert_eq!(
            rule.transitions,
            [(30, "STANDARD_IA".to_owned()), (90, "GLACIER".to_owned())]
        );
        assert_eq!((rule.expire_days, rule.abort_days), (Some(365), Some(7)));
    }
}
