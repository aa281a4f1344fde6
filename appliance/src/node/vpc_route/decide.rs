//! The decisions behind the VPC return route, with no AWS call and no
//! clock: which route tables need what, and how long to wait before the
//! next attempt.

use std::time::Duration;

use anyhow::bail;

/// A VPC route table ID, checked for shape (`rtb-` and 8 or 17 lower-case
/// hex digits).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteTableId(String);

impl RouteTableId {
    /// Parses `text`; the error names the value and what was expected.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let hex = text.strip_prefix("rtb-").unwrap_or_default();
        if !matches!(hex.len(), 8 | 17)
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            bail!(
                "{text:?}: expected a VPC route table ID, rtb- and 17 lower-case hex digits (rtb-0123456789abcdef0)"
            );
        }
        Ok(Self(text.to_owned()))
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RouteTableId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for RouteTableId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::parse(&text).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

/// What a table's tailnet route (`100.64.0.0/10`) points at now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// The table has no such route.
    NoRoute,
    /// The route's target: an `eni-…`, or another kind of target
    /// (`igw-…`, `nat-…`, `i-…`); `None` for a route with no target left
    /// (a blackhole whose interface was deleted).
    Route(Option<String>),
}

/// What one table needs for the route to point at this node's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// It already does: nothing to change.
    Keep,
    /// Point the existing route at us (EC2 ReplaceRoute); `from` is what it
    /// pointed at.
    Replace {
        /// The old target, `None` for a blackhole.
        from: Option<String>,
    },
    /// Add the route (EC2 CreateRoute).
    Create,
}

/// The step that makes `seen` point at `eni`.
pub fn decide(eni: &str, seen: &Seen) -> Step {
    match seen {
        Seen::NoRoute => Step::Create,
        Seen::Route(Some(target)) if target == eni => Step::Keep,
        Seen::Route(from) => Step::Replace { from: from.clone() },
    }
}

/// The first retry comes quickly (the failover is waiting on it); later
/// ones back off to [`MAX_RETRY_DELAY`] so an instance without the
/// permission does not hammer the EC2 API.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
/// The longest wait between two attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// How long to wait after `failures` failed attempts in a row (at least
/// one): [`FIRST_RETRY_DELAY`] doubling up to [`MAX_RETRY_DELAY`].
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY_DELAY
        .saturating_mul(1 << doublings)
        .min(MAX_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_already_pointing_at_us_is_kept_and_any_other_is_moved() {
        let us = "eni-0aaaaaaaaaaaaaaaa";
        assert_eq!(decide(us, &Seen::Route(Some(us.into()))), Step::Keep);
        assert_eq!(
            decide(us, &Seen::Route(Some("eni-0bbbbbbbbbbbbbbbb".into()))),
            Step::Replace {
                from: Some("eni-0bbbbbbbbbbbbbbbb".into())
            }
        );
        assert_eq!(
            decide(us, &Seen::Route(Some("igw-1".into()))),
            Step::Replace {
                from: Some("igw-1".into())
            }
        );
        assert_eq!(decide(us, &Seen::Route(None)), Step::Replace { from: None });
        assert_eq!(decide(us, &Seen::NoRoute), Step::Create);
    }

    #[test]
    fn retries_start_fast_and_back_off_to_a_cap() {
        let delays: Vec<u128> = [1, 2, 3, 4, 8, 9, 200, u32::MAX]
            .into_iter()
            .map(|n| retry_delay(n).as_millis())
            .collect();
        assert_eq!(
            delays,
            [250, 500, 1000, 2000, 30_000, 30_000, 30_000, 30_000]
        );
        assert_eq!(retry_delay(0), FIRST_RETRY_DELAY);
    }

    #[test]
    fn route_table_ids_are_checked_for_shape() {
        for good in ["rtb-0123456789abcdef0", "rtb-12345678"] {
            assert_eq!(RouteTableId::parse(good).expect("valid").as_str(), good);
        }
        for bad in [
            "rtb-0123456789ABCDEF0",
            "rtb-123",
            "igw-12345678",
            "",
            "rtb-",
        ] {
            let err = RouteTableId::parse(bad).expect_err("invalid");
            assert!(
                err.to_string()
                    .contains("expected a VPC route table ID, rtb- and 17"),
                "{err}"
            );
        }
    }
}
