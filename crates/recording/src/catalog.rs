//! The web UI's view of recordings, sans-IO: session IDs derived from
//! storage keys, list filters parsed from a query string, matching, a
//! deterministic order and paging. The caller lists storage and the spool
//! and passes in `now`; nothing here reads a clock or a file.

use std::fmt;

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

use crate::CastHeader;
use crate::key::segment;

/// Sessions shown per page of the list.
pub const PAGE_SIZE: usize = 50;

/// A session's ID in URLs: its storage key without the prefix and `.cast`,
/// `<node-id>/<YYYYMMDDTHHMMSSZ>-<connection>-<nonce>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(String);

/// Why a session ID from a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session ID {0:?} is not `<node-id>/<YYYYMMDDTHHMMSSZ>-<connection>`")]
pub struct BadSessionId(pub String);

/// A session as the list shows it: identity from its key, details from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    /// ID in URLs.
    pub id: SessionId,
    /// Start, Unix seconds: the header's timestamp, or the key's when the header is unreadable.
    pub started: i64,
    /// The header line, when it could be read and parsed.
    pub header: Option<CastHeader>,
    /// Still in the spool: being recorded, or waiting for upload.
    pub live: bool,
    /// Size in bytes so far.
    pub bytes: u64,
}

/// Which sessions the list shows, from the query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    /// Case-insensitive substring of the node ID or node name.
    pub node: Option<String>,
    /// Case-insensitive substring of the tailnet user, SSH user or local user.
    pub user: Option<String>,
    /// Earliest start, Unix seconds, inclusive.
    pub from: Option<i64>,
    /// Latest start, Unix seconds, exclusive.
    pub to: Option<i64>,
    /// Only sessions started within this many seconds before `now`.
    pub last: Option<i64>,
    /// 1-based page number.
    pub page: usize,
    /// The time parameters as given, to put back into the form and links.
    raw_from: String,
    raw_to: String,
    raw_last: String,
    now: i64,
}

/// A malformed filter: names the parameter and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A known parameter with a value that does not parse.
    #[error("query parameter `{name}` is {value:?}, expected {expected}")]
    Invalid {
        /// The parameter.
        name: &'static str,
        /// What was sent.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A parameter the list does not know.
    #[error("unknown query parameter `{0}`, expected node, user, from, to, last or page")]
    Unknown(String),
}

/// One page of a sorted list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<'a> {
    /// The sessions on this page.
    pub items: &'a [SessionSummary],
    /// This page's number, 1-based.
    pub number: usize,
    /// Number of pages (at least 1).
    pub pages: usize,
    /// Sessions on all pages.
    pub total: usize,
}

impl SessionId {
    /// The ID of the recording stored under `key`, or `None` for a key that
    /// is not a recording under `prefix` (see [`crate::object_key`]).
    pub fn from_key(prefix: &str, key: &str) -> Option<Self> {
        let rest = key.strip_prefix(&prefix_path(prefix))?;
        let id = rest.strip_suffix(".cast")?;
        Self::parse(id).ok()
    }

    /// Parses an ID taken from a URL.
    pub fn parse(text: &str) -> Result<Self, BadSessionId> {
        let bad = || BadSessionId(text.to_owned());
        let (node, name) = text.split_once('/').ok_or_else(bad)?;
        let valid = |s: &str| !s.is_empty() && segment(s) == s;
        if !valid(node) || !valid(name) || parse_stamp(name).is_none() {
            return Err(bad());
        }
        Ok(Self(text.to_owned()))
    }

    /// What every session key under `prefix` starts with (empty for no prefix).
    pub fn key_prefix(prefix: &str) -> String {
        prefix_path(prefix)
    }

    /// The storage key of this session under `prefix`.
    pub fn key(&self, prefix: &str) -> String {
        format!("{}{}.cast", prefix_path(prefix), self.0)
    }

    /// The source node ID, from the key.
    pub fn node_id(&self) -> &str {
        self.0.split_once('/').map_or("", |(node, _)| node)
    }

    /// The start time in the key, Unix seconds.
    pub fn started(&self) -> Option<i64> {
        self.0
            .split_once('/')
            .and_then(|(_, name)| parse_stamp(name))
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl SessionSummary {
    /// A summary from the key and, when readable, the first line of the recording.
    pub fn new(id: SessionId, first_line: Option<&[u8]>, live: bool, bytes: u64) -> Self {
        let header = first_line.and_then(|line| CastHeader::parse(line).ok());
        let started = header
            .as_ref()
            .map(|h| h.timestamp)
            .or_else(|| id.started())
            .unwrap_or(0);
        Self {
            id,
            started,
            header,
            live,
            bytes,
        }
    }
}

impl SessionFilter {
    /// Parses the list's query string (without `?`); `now` (Unix seconds)
    /// anchors `last`. Empty values count as absent, as an HTML form sends
    /// its empty fields.
    pub fn from_query(query: &str, now: i64) -> Result<Self, FilterError> {
        let mut filter = Self {
            page: 1,
            now,
            ..Self::default()
        };
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match name.as_ref() {
                "node" => filter.node = Some(value.to_owned()),
                "user" => filter.user = Some(value.to_owned()),
                "from" => {
                    filter.from = Some(parse_time("from", value, false)?);
                    filter.raw_from = value.to_owned();
                }
                "to" => {
                    filter.to = Some(parse_time("to", value, true)?);
                    filter.raw_to = value.to_owned();
                }
                "last" => {
                    filter.last = Some(parse_age(value)?);
                    filter.raw_last = value.to_owned();
                }
                "page" => {
                    filter.page =
                        value
                            .parse::<usize>()
                            .ok()
                            .filter(|p| *p >= 1)
                            .ok_or_else(|| FilterError::Invalid {
                                name: "page",
                                value: value.to_owned(),
                                expected: "a page number from 1",
                            })?;
                }
                other => return Err(FilterError::Unknown(other.to_owned())),
            }
        }
        if let (Some(from), Some(to)) = (filter.from, filter.to)
            && to <= from
        {
            return Err(FilterError::Invalid {
                name: "to",
                value: filter.raw_to.clone(),
                expected: "a time after `from`",
            });
        }
        Ok(filter)
    }

    /// Whether `session` passes every filter.
    pub fn matches(&self, session: &SessionSummary) -> bool {
        let header = session.header.as_ref();
        if let Some(node) = &self.node {
            let names = [
                session.id.node_id(),
                header.map_or("", |h| h.src_node_id.as_str()),
                header.map_or("", |h| h.src_node.as_str()),
            ];
            if !names.iter().any(|n| contains_folded(n, node)) {
                return false;
            }
        }
        if let Some(user) = &self.user {
            let Some(h) = header else { return false };
            let names = [&h.src_node_user, &h.ssh_user, &h.local_user];
            if !names.iter().any(|n| contains_folded(n, user)) {
                return false;
            }
        }
        self.matches_start(session.started)
    }

    /// Whether a session started at `started` (Unix seconds) passes `from`,
    /// `to` and `last`: lets a caller skip reading a header it would drop.
    pub fn matches_start(&self, started: i64) -> bool {
        let after_from = self.from.is_none_or(|from| started >= from);
        let before_to = self.to.is_none_or(|to| started < to);
        let within_last = self
            .last
            .is_none_or(|last| started >= self.now.saturating_sub(last));
        after_from && before_to && within_last
    }

    /// The query string of this filter on page `page` (for paging links).
    pub fn query(&self, page: usize) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        let fields = [
            ("node", self.node.as_deref().unwrap_or("")),
            ("user", self.user.as_deref().unwrap_or("")),
            ("from", self.raw_from.as_str()),
            ("to", self.raw_to.as_str()),
            ("last", self.raw_last.as_str()),
        ];
        for (name, value) in fields {
            if !value.is_empty() {
                out.append_pair(name, value);
            }
        }
        if page > 1 {
            out.append_pair("page", &page.to_string());
        }
        out.finish()
    }

    /// `from` as given, for the form.
    pub fn raw_from(&self) -> &str {
        &self.raw_from
    }

    /// `to` as given, for the form.
    pub fn raw_to(&self) -> &str {
        &self.raw_to
    }

    /// `last` as given, for the form.
    pub fn raw_last(&self) -> &str {
        &self.raw_last
    }
}

/// Sorts for the list: live sessions first, then newest first, ties by ID.
pub fn sort_sessions(sessions: &mut [SessionSummary]) {
    sessions.sort_by(|a, b| {
        b.live
            .cmp(&a.live)
            .then(b.started.cmp(&a.started))
            .then_with(|| a.id.cmp(&b.id))
    });
}

/// Page `number` (1-based) of `sessions`; past the end gives an empty page.
pub fn page(sessions: &[SessionSummary], number: usize) -> Page<'_> {
    let total = sessions.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let start = number
        .saturating_sub(1)
        .saturating_mul(PAGE_SIZE)
        .min(total);
    let end = start.saturating_add(PAGE_SIZE).min(total);
    Page {
        items: &sessions[start..end],
        number,
        pages,
        total,
    }
}

/// A Unix time as the list shows it: `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_time(unix: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(unix) {
        // Date's Display is ISO 8601 (`2023-11-14`); Time's would add a fraction.
        Ok(t) => format!(
            "{} {:02}:{:02}:{:02} UTC",
            t.date(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => unix.to_string(),
    }
}

/// The key prefix as [`crate::object_key`] writes it: cleaned segments, each followed by `/`.
fn prefix_path(prefix: &str) -> String {
    prefix
        .split('/')
        .filter(|p| !p.is_empty())
        .map(|p| segment(p) + "/")
        .collect()
}

/// The start time at the front of a key's file name, `YYYYMMDDTHHMMSSZ-…`.
fn parse_stamp(name: &str) -> Option<i64> {
    let stamp = name.get(..16)?;
    let rest = name.get(16..)?;
    if !rest.starts_with('-') || rest.len() < 2 {
        return None;
    }
    let b = stamp.as_bytes();
    if b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = stamp.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let date = make_date(num(0..4)?, num(4..6)?, num(6..8)?)?;
    let time = Time::from_hms(
        u8::try_from(num(9..11)?).ok()?,
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(13..15)?).ok()?,
    )
    .ok()?;
    Some(
        PrimitiveDateTime::new(date, time)
            .assume_utc()
            .unix_timestamp(),
    )
}

fn make_date(year: u32, month: u32, day: u32) -> Option<Date> {
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()
}

const TIME_EXPECTED: &str =
    "a UTC time as YYYY-MM-DD, YYYY-MM-DDTHH:MM or YYYY-MM-DDTHH:MM:SS (optionally ending in Z)";

/// `YYYY-MM-DD[THH:MM[:SS]][Z]` in UTC. A bare date as `to` means the end of that day.
fn parse_time(name: &'static str, value: &str, end_of_day: bool) -> Result<i64, FilterError> {
    let invalid = || FilterError::Invalid {
        name,
        value: value.to_owned(),
        expected: TIME_EXPECTED,
    };
    let text = value.strip_suffix('Z').unwrap_or(value);
    let (date, clock) = match text.split_once(['T', ' ']) {
        Some((d, c)) => (d, Some(c)),
        None => (text, None),
    };
    let fields = |s: &str, sep: char, len: &[usize]| -> Option<Vec<u32>> {
        let parts: Vec<&str> = s.split(sep).collect();
        if parts.len() != len.len() && !(sep == ':' && parts.len() + 1 == len.len()) {
            return None;
        }
        parts
            .iter()
            .zip(len)
            .map(|(p, l)| {
                (p.len() == *l && p.bytes().all(|c| c.is_ascii_digit()))
                    .then(|| p.parse().ok())
                    .flatten()
            })
            .collect()
    };
    let ymd = fields(date, '-', &[4, 2, 2]).ok_or_else(invalid)?;
    let date = make_date(ymd[0], ymd[1], ymd[2]).ok_or_else(invalid)?;
    let Some(clock) = clock else {
        let start = PrimitiveDateTime::new(date, Time::MIDNIGHT)
            .assume_utc()
            .unix_timestamp();
        return Ok(if end_of_day { start + 86_400 } else { start });
    };
    let hms = fields(clock, ':', &[2, 2, 2]).ok_or_else(invalid)?;
    let part = |i: usize| u8::try_from(hms.get(i).copied().unwrap_or(0)).ok();
    let time = Time::from_hms(
        part(0).ok_or_else(invalid)?,
        part(1).ok_or_else(invalid)?,
        part(2).ok_or_else(invalid)?,
    )
    .map_err(|_| invalid())?;
    Ok(PrimitiveDateTime::new(date, time)
        .assume_utc()
        .unix_timestamp())
}

/// `<n>m`, `<n>h` or `<n>d`, in seconds.
fn parse_age(value: &str) -> Result<i64, FilterError> {
    let invalid = || FilterError::Invalid {
        name: "last",
        value: value.to_owned(),
        expected: "a duration such as 30m, 12h or 7d",
    };
    let unit = match value.chars().last() {
        Some('m') => 60,
        Some('h') => 3_600,
        Some('d') => 86_400,
        _ => return Err(invalid()),
    };
    let digits = &value[..value.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(invalid());
    }
    digits
        .parse::<i64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|n| *n > 0)
        .ok_or_else(invalid)
}

fn contains_folded(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object_key;
    use proptest::prelude::*;

    const NOW: i64 = 1_700_000_000; // 2023-11-14T22:13:20Z

    fn header(node: &str, name: &str, user: &str, ssh_user: &str, ts: i64) -> CastHeader {
        CastHeader {
            version: 2,
            width: 80,
            height: 24,
            timestamp: ts,
            command: String::new(),
            env: Default::default(),
            src_node: name.to_owned(),
            src_node_id: node.to_owned(),
            src_node_tags: vec![],
            src_node_user_id: None,
            src_node_user: user.to_owned(),
            ssh_user: ssh_user.to_owned(),
            local_user: ssh_user.to_owned(),
            connection_id: format!("c{ts}"),
        }
    }

    fn summary(h: &CastHeader, live: bool) -> SessionSummary {
        let key = object_key("rec", h, 0);
        let id = SessionId::from_key("rec", key.as_str()).expect("a recording key");
        let line = serde_json::to_vec(h).expect("serializes");
        SessionSummary::new(id, Some(&line), live, 100)
    }

    #[test]
    fn ids_round_trip_through_keys() {
        let h = header("nAbC1", "laptop", "alice@example.com", "alice", NOW);
        let key = object_key("/recordings/prod/", &h, 2);
        let id = SessionId::from_key("recordings/prod", key.as_str()).expect("parses");
        assert_eq!(
            id.as_str(),
            "nAbC1/20231114T221320Z-c1700000000-0000000000000002"
        );
        assert_eq!(id.node_id(), "nAbC1");
        assert_eq!(id.started(), Some(NOW));
        assert_eq!(id.key("recordings/prod"), key.as_str());
        assert_eq!(
            id.key(""),
            "nAbC1/20231114T221320Z-c1700000000-0000000000000002.cast"
        );
        assert!(
            key.as_str()
                .starts_with(&SessionId::key_prefix("/recordings/prod"))
        );
        assert_eq!(
            SessionId::key_prefix("/recordings/prod"),
            "recordings/prod/"
        );
        assert_eq!(SessionId::key_prefix(""), "");
    }

    #[test]
    fn refuses_ids_that_are_not_session_keys() {
        for bad in [
            "",
            "n",
            "../etc/20231114T221320Z-c",
            "n/../20231114T221320Z-c",
            "n/20231114T221320Z-c/x",
            "n/20231114T221320Z",
            "n/2023111XT221320Z-c",
            "n/20231314T221320Z-c",
            "n/.20231114T221320Z-c",
            "n o/20231114T221320Z-c",
        ] {
            assert_eq!(
                SessionId::parse(bad),
                Err(BadSessionId(bad.to_owned())),
                "{bad:?}"
            );
        }
        assert_eq!(SessionId::from_key("rec", "rec/n/notes.txt"), None);
        assert_eq!(
            SessionId::from_key("rec", "other/n/20231114T221320Z-c.cast"),
            None
        );
    }

    #[test]
    fn parses_a_full_query() {
        let f = SessionFilter::from_query(
            "node=laptop&user=Alice&from=2023-11-14&to=2023-11-14T22%3A30&last=2h&page=3",
            NOW,
        )
        .expect("valid");
        assert_eq!(f.node.as_deref(), Some("laptop"));
        assert_eq!(f.user.as_deref(), Some("Alice"));
        assert_eq!(f.from, Some(1_699_920_000));
        assert_eq!(f.to, Some(1_700_001_000));
        assert_eq!(f.last, Some(7_200));
        assert_eq!(f.page, 3);
        assert_eq!(
            f.query(4),
            "node=laptop&user=Alice&from=2023-11-14&to=2023-11-14T22%3A30&last=2h&page=4"
        );
    }

    #[test]
    fn empty_form_fields_are_absent() {
        let f = SessionFilter::from_query("node=&user=+&from=&to=&last=", NOW).expect("valid");
        assert_eq!(f, SessionFilter::from_query("", NOW).expect("valid"));
        assert_eq!(f.page, 1);
        assert_eq!(f.query(1), "");
    }

    #[test]
    fn a_bare_date_as_to_ends_with_that_day() {
        let f = SessionFilter::from_query("to=2023-11-14", NOW).expect("valid");
        assert_eq!(f.to, Some(1_700_006_400));
        let f = SessionFilter::from_query("from=2023-11-14T22:13:20Z", NOW).expect("valid");
        assert_eq!(f.from, Some(NOW));
    }

    #[test]
    fn malformed_filters_name_the_parameter() {
        let cases = [
            ("from=yesterday", "from"),
            ("to=2023-13-01", "to"),
            ("from=2023-11-14T25:00", "from"),
            ("last=7", "last"),
            ("last=0d", "last"),
            ("page=0", "page"),
            ("page=x", "page"),
            ("from=2023-11-15&to=2023-11-14T00:00", "to"),
        ];
        for (query, param) in cases {
            let err = SessionFilter::from_query(query, NOW).expect_err(query);
            assert!(
                matches!(&err, FilterError::Invalid { name, .. } if *name == param),
                "{query}: {err:?}"
            );
            assert!(err.to_string().contains(&format!("`{param}`")), "{err}");
        }
        assert_eq!(
            SessionFilter::from_query("host=a", NOW),
            Err(FilterError::Unknown("host".to_owned()))
        );
    }

    #[test]
    fn filters_by_node_user_and_time() {
        let a = summary(
            &header(
                "nA",
                "laptop.ts.net",
                "alice@example.com",
                "root",
                NOW - 7_200,
            ),
            false,
        );
        let b = summary(
            &header("nB", "server.ts.net", "bob@example.com", "bob", NOW - 60),
            true,
        );
        let shown = |q: &str| -> Vec<String> {
            let f = SessionFilter::from_query(q, NOW).expect(q);
            [&a, &b]
                .iter()
                .filter(|s| f.matches(s))
                .map(|s| s.id.node_id().to_owned())
                .collect()
        };
        assert_eq!(shown(""), ["nA", "nB"]);
        assert_eq!(shown("node=LAPTOP"), ["nA"]);
        assert_eq!(shown("node=nb"), ["nB"]);
        assert_eq!(shown("user=ALICE"), ["nA"]);
        assert_eq!(shown("user=bob"), ["nB"]);
        assert_eq!(shown("user=root"), ["nA"]);
        assert_eq!(shown("last=1h"), ["nB"]);
        let f = SessionFilter::from_query("from=2023-11-14T21:00&last=1d", NOW).expect("valid");
        assert!(f.matches_start(NOW) && f.matches_start(1_699_995_600));
        assert!(!f.matches_start(1_699_995_599), "before from");
        assert!(
            !SessionFilter::from_query("last=1h", NOW)
                .expect("valid")
                .matches_start(NOW - 3_601)
        );
        assert_eq!(shown("from=2023-11-14T21:00"), ["nB"]);
        assert_eq!(shown("to=2023-11-14T21:00"), ["nA"]);
        assert!(shown("user=carol").is_empty());
    }

    #[test]
    fn a_session_without_a_readable_header_uses_its_key() {
        let id = SessionId::parse("nX/20231114T221320Z-c").expect("valid");
        let s = SessionSummary::new(id, Some(b"not json"), false, 8);
        assert_eq!((s.started, s.header.is_none()), (NOW, true));
        let f = SessionFilter::from_query("user=alice", NOW).expect("valid");
        assert!(!f.matches(&s), "no header, no user to match");
        let f = SessionFilter::from_query("node=nx", NOW).expect("valid");
        assert!(f.matches(&s));
    }

    #[test]
    fn sorts_live_first_then_newest_then_by_id() {
        let mk = |id: &str, live| {
            SessionSummary::new(SessionId::parse(id).expect("valid"), None, live, 0)
        };
        let mut list = vec![
            mk("b/20231114T000000Z-c", false),
            mk("a/20231114T000000Z-c", false),
            mk("z/20200101T000000Z-c", true),
            mk("c/20231115T000000Z-c", false),
        ];
        sort_sessions(&mut list);
        let ids: Vec<&str> = list.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "z/20200101T000000Z-c",
                "c/20231115T000000Z-c",
                "a/20231114T000000Z-c",
                "b/20231114T000000Z-c"
            ]
        );
    }

    #[test]
    fn pages_hold_page_size_sessions() {
        let list: Vec<SessionSummary> = (0..(PAGE_SIZE * 2 + 1))
            .map(|i| {
                let id = SessionId::parse(&format!("n/20231114T000000Z-c{i:03}")).expect("valid");
                SessionSummary::new(id, None, false, 0)
            })
            .collect();
        let p = page(&list, 3);
        assert_eq!((p.items.len(), p.number, p.pages, p.total), (1, 3, 3, 101));
        assert_eq!(p.items[0].id.as_str(), "n/20231114T000000Z-c100");
        assert_eq!(page(&list, 1).items.len(), PAGE_SIZE);
        assert!(page(&list, 9).items.is_empty());
        assert_eq!(page(&[], 1).pages, 1);
    }

    #[test]
    fn formats_times_in_utc() {
        assert_eq!(format_time(NOW), "2023-11-14 22:13:20 UTC");
    }

    proptest! {
        #[test]
        fn every_object_key_has_an_id(node in "\\PC{0,30}", conn in "\\PC{0,30}", ts in 0i64..10_000_000_000, nonce: u64) {
            let h = header(&node, "", "", "", ts);
            let mut h = h;
            h.connection_id = conn;
            let key = object_key("rec/x", &h, nonce);
            let id = SessionId::from_key("rec/x", key.as_str());
            prop_assert!(id.is_some(), "{}", key);
            let id = id.expect("checked");
            prop_assert_eq!(id.key("rec/x"), key.as_str());
            prop_assert_eq!(id.started(), Some(ts));
        }

        #[test]
        fn query_parsing_never_panics(query in "\\PC{0,80}") {
            let _ = SessionFilter::from_query(&query, NOW);
        }

        #[test]
        fn a_filter_survives_its_own_query(node in "[a-z ]{0,8}", user in "\\PC{0,8}", page in 1usize..9) {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("node", &node).append_pair("user", &user).append_pair("last", "3d");
            let f = SessionFilter::from_query(&q.finish(), NOW).expect("valid");
            let again = SessionFilter::from_query(&f.query(page), NOW).expect("valid");
            prop_assert_eq!(again.page, page);
            prop_assert_eq!(SessionFilter { page: f.page, ..again }, f);
        }
    }
}
