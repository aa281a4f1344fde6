//! The policy file's shape, read with `json5` so that every error, syntax
//! or meaning, carries the line and column of the value at fault.
//!
//! `json5` attaches the position of a value to any error its visitor
//! returns, so each leaf (an alias, a port list, a prefix) is checked inside
//! a `visit_str`. Checks that need the rest of the file (is this group
//! defined?) read the names a first pass collected from a thread-local set
//! for the duration of the second pass: serde's `Deserialize` takes no
//! context, and threading a `DeserializeSeed` through every level would
//! triple this module for no gain in clarity.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use causeway_wire::PortRange;
use causeway_wire::caps::{PeerCapMap, RECORDER_CAP, recorder_actions};
use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::Value;

use super::{Alias, Approver, AutoGroup};

use crate::auth_keys::validate_tag;

/// Names defined anywhere in the file, for cross-reference checks.
#[derive(Debug, Default)]
pub(super) struct Names {
    pub groups: BTreeSet<String>,
    pub hosts: BTreeSet<String>,
    pub tags: BTreeSet<String>,
}

thread_local! {
    static NAMES: RefCell<Option<Names>> = const { RefCell::new(None) };
}

/// Makes `names` visible to the leaf checks until dropped.
pub(super) struct NamesGuard;

impl NamesGuard {
    pub(super) fn set(names: Names) -> Self {
        NAMES.with(|n| *n.borrow_mut() = Some(names));
        NamesGuard
    }
}

impl Drop for NamesGuard {
    fn drop(&mut self) {
        NAMES.with(|n| *n.borrow_mut() = None);
    }
}

fn with_names<T>(f: impl FnOnce(&Names) -> T) -> Option<T> {
    NAMES.with(|n| n.borrow().as_ref().map(f))
}

/// The top level, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    #[serde(default)]
    pub groups: BTreeMap<GroupName, Vec<UserName>>,
    #[serde(default)]
    pub hosts: BTreeMap<HostName, PrefixText>,
    #[serde(default, rename = "tagOwners")]
    pub tag_owners: BTreeMap<TagName, Vec<Owner>>,
    #[serde(default)]
    pub acls: Vec<RawAcl>,
    #[serde(default)]
    pub grants: Vec<RawGrant>,
    #[serde(default, rename = "autoApprovers")]
    pub auto_approvers: RawAutoApprovers,
    #[serde(default)]
    pub tests: Vec<RawTest>,
    // Sections kept as written for later compilers (ssh, nodeAttrs, …).
    #[serde(default)]
    pub ssh: Option<Value>,
    #[serde(default, rename = "nodeAttrs")]
    pub node_attrs: Option<Value>,
    #[serde(default, rename = "sshTests")]
    pub ssh_tests: Option<Value>,
    #[serde(default, rename = "derpMap")]
    pub derp_map: Option<Value>,
    #[serde(default, rename = "randomizeClientPort")]
    pub randomize_client_port: Option<Value>,
}

/// One `acls` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAcl {
    #[serde(rename = "action")]
    pub _action: Action,
    pub src: Vec<SrcAlias>,
    pub dst: Vec<DstPorts>,
    #[serde(default)]
    pub proto: Option<Proto>,
}

/// One `grants` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGrant {
    pub src: Vec<SrcAlias>,
    pub dst: Vec<DstAlias>,
    #[serde(default)]
    pub ip: Vec<IpCap>,
    #[serde(default)]
    pub app: Option<AppCaps>,
    // Refused when present: these never hold a value.
    #[serde(default, rename = "via")]
    pub _via: Option<Unsupported<ViaGrant>>,
    #[serde(default, rename = "srcPosture")]
    pub _src_posture: Option<Unsupported<PostureGrant>>,
}

/// One `tests` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTest {
    pub src: SrcAlias,
    #[serde(default)]
    pub proto: Option<Proto>,
    #[serde(default)]
    pub accept: Vec<DstPorts>,
    #[serde(default)]
    pub deny: Vec<DstPorts>,
}

/// `autoApprovers`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAutoApprovers {
    #[serde(default)]
    pub routes: BTreeMap<RouteKeyText, Vec<ApproverText>>,
    #[serde(default, rename = "exitNode")]
    pub exit_node: Vec<ApproverText>,
}

// --- leaves ----------------------------------------------------------------

/// Implements `Deserialize` for a newtype over a value parsed from a string
/// by `$parse`, so its errors carry the string's position.
macro_rules! string_leaf {
    ($ty:ident, $inner:ty, $expecting:literal, $parse:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$ty, E> {
                        let parse: fn(&str) -> Result<$inner, String> = $parse;
                        parse(s).map($ty).map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

/// `group:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct GroupName(pub String);
string_leaf!(GroupName, String, "a group name (group:NAME)", |s| {
    match s.strip_prefix("group:") {
        Some(name) if valid_name(name) => Ok(s.to_owned()),
        _ => Err(format!(
            "group {s:?}: expected group:NAME with NAME made of letters, digits, '-', '_' and '.'"
        )),
    }
});

/// A user, `name@domain`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct UserName(pub String);
string_leaf!(UserName, String, "a user (name@domain)", |s| {
    if is_user(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "group member {s:?}: expected a user (name@domain); groups cannot contain groups or tags"
        ))
    }
});

/// A `hosts` key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct HostName(pub String);
string_leaf!(HostName, String, "a host name", |s| {
    if valid_name(s) && !s.contains(':') {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "host name {s:?}: expected letters, digits, '-', '_' and '.' (no ':' or '@')"
        ))
    }
});

/// An IP address or prefix, canonical (no host bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct PrefixText(pub IpNet);
string_leaf!(PrefixText, IpNet, "an IP address or prefix", parse_prefix);

/// An `autoApprovers.routes` key: a prefix, or `site:SITE:PREFIX` for a
/// 4via6 site's IPv4 range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum RouteKey {
    Prefix(IpNet),
    Site(u16, Ipv4Net),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct RouteKeyText(pub RouteKey);
string_leaf!(
    RouteKeyText,
    RouteKey,
    "an IP prefix or site:SITE:PREFIX",
    |s| match parse_site(s) {
        Some(site) => site.map(|(site, range)| RouteKey::Site(site, range)),
        None => parse_prefix(s).map(RouteKey::Prefix),
    }
);

/// `site:SITE:PREFIX` (a 4via6 site's IPv4 range): `None` when `s` does
/// not start with `site:`.
fn parse_site(s: &str) -> Option<Result<(u16, Ipv4Net), String>> {
    let rest = s.strip_prefix("site:")?;
    let expected = || {
        format!(
            "{s:?}: expected site:SITE:PREFIX, a site ID from 0 to 65535 and an IPv4 address or prefix (like site:7:10.0.0.0/24)"
        )
    };
    let Some((site, prefix)) = rest.split_once(':') else {
        return Some(Err(expected()));
    };
    let Ok(site) = site.parse::<u16>() else {
        return Some(Err(expected()));
    };
    Some(match parse_prefix(prefix) {
        Ok(IpNet::V4(range)) => Ok((site, range)),
        Ok(IpNet::V6(_)) => Err(format!(
            "{s:?}: a 4via6 site holds IPv4 ranges; name an IPv6 prefix without site:"
        )),
        Err(e) => Err(format!("{s:?}: {e}")),
    })
}

/// `tag:NAME`, a `tagOwners` key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct TagName(pub String);
string_leaf!(TagName, String, "a tag (tag:NAME)", |s| {
    validate_tag(s)
        .map(|()| s.to_owned())
        .map_err(|e| e.to_string())
});

/// A `tagOwners` value entry: a user, group, tag or `autogroup:admin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Owner(pub String);
string_leaf!(Owner, String, "a tag owner", |s| {
    if is_user(s) || s == "autogroup:admin" || s == "autogroup:member" {
        return Ok(s.to_owned());
    }
    if s.starts_with("group:") {
        return defined_group(s).map(|()| s.to_owned());
    }
    if s.starts_with("tag:") {
        validate_tag(s).map_err(|e| e.to_string())?;
        return defined_tag(s).map(|()| s.to_owned());
    }
    Err(format!(
        "tag owner {s:?}: expected a user (name@domain), group:NAME, tag:NAME or autogroup:admin"
    ))
});

/// `"accept"`, the only ACL action.
#[derive(Debug)]
pub(super) struct Action;
impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Action;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"accept\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Action, E> {
                if s == "accept" {
                    Ok(Action)
                } else {
                    Err(E::custom(format!(
                        "action {s:?}: expected \"accept\" (policies deny by default)"
                    )))
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// An alias allowed in `src`.
#[derive(Debug, Clone)]
pub(super) struct SrcAlias(pub Alias);
string_leaf!(SrcAlias, Alias, "a source alias", |s| {
    let alias = parse_alias(s)?;
    match alias {
        Alias::AutoGroup(AutoGroup::SelfDevices) => Err(format!(
            "{s:?} is not valid on the src side: autogroup:self may only be a destination"
        )),
        Alias::AutoGroup(AutoGroup::Internet) => Err(format!(
            "{s:?} is not valid on the src side: autogroup:internet may only be a destination"
        )),
        Alias::Site { .. } => Err(format!(
            "{s:?} is not valid on the src side: a 4via6 site's range may only be a destination"
        )),
        other => Ok(other),
    }
});

/// An alias allowed in a grant's `dst` (no ports).
#[derive(Debug, Clone)]
pub(super) struct DstAlias(pub Alias);
string_leaf!(DstAlias, Alias, "a destination alias", parse_alias);

/// `alias:ports` in an ACL's `dst` or a test's `accept`/`deny`.
#[derive(Debug, Clone)]
pub(super) struct DstPorts(pub (Alias, Vec<PortRange>));
string_leaf!(
    DstPorts,
    (Alias, Vec<PortRange>),
    "a destination (alias:ports)",
    |s| {
        let (host, ports) = split_host_ports(s)?;
        // Ports first: in `autogroup:self` (no port) the split leaves
        // "autogroup" as the alias, and the real mistake is the missing port.
        let ports = parse_ports(ports).map_err(|e| format!("destination {s:?}: {e}"))?;
        let alias = parse_alias(host)?;
        Ok((alias, ports))
    }
);

/// An ACL's `proto`, as an IANA protocol number.
#[derive(Debug, Clone, Copy)]
pub(super) struct Proto(pub u8);
string_leaf!(Proto, u8, "a protocol name or number", parse_proto);

/// A grant's `ip` entry: `*`, `PORTS` or `PROTO:PORTS`.
#[derive(Debug, Clone)]
pub(super) struct IpCap(pub (Option<u8>, Vec<PortRange>));
string_leaf!(
    IpCap,
    (Option<u8>, Vec<PortRange>),
    "an ip capability (proto:ports)",
    |s| {
        if s == "*" {
            return Ok((None, vec![PortRange::ANY]));
        }
        let (proto, ports) = match s.split_once(':') {
            Some((proto, ports)) => (Some(parse_proto(proto)?), ports),
            None => (None, s),
        };
        let ports = parse_ports(ports).map_err(|e| format!("ip {s:?}: {e}"))?;
        if let Some(p) = proto
            && !has_ports(p)
            && ports != [PortRange::ANY]
        {
            return Err(format!(
                "ip {s:?}: protocol {p} has no ports; write {p}:* (port ranges apply to tcp, udp and sctp only)"
            ));
        }
        Ok((proto, ports))
    }
);

/// An `autoApprovers` entry.
#[derive(Debug, Clone)]
pub(super) struct ApproverText(pub Approver);
string_leaf!(ApproverText, Approver, "an approver", |s| {
    // Tags need not be in tagOwners here: policies written before
    // tagOwners was read must keep loading.
    if s.starts_with("tag:") {
        validate_tag(s).map_err(|e| e.to_string())?;
        Ok(Approver::Tag(s.to_owned()))
    } else if s.starts_with("group:") {
        defined_group(s)?;
        Ok(Approver::Group(s.to_owned()))
    } else if is_user(s) {
        Ok(Approver::User(s.to_owned()))
    } else {
        Err(format!(
            "approver {s:?}: expected tag:NAME, group:NAME or a user (name@domain)"
        ))
    }
});

/// The most bytes one grant's `app` may hold (names and values as JSON):
/// capabilities are small settings, and each destination node is sent
/// every grant that names it.
pub(super) const MAX_APP_BYTES: usize = 16 * 1024;

/// The longest capability name.
const MAX_CAP_NAME: usize = 256;

/// A grant's `app`: capability name → values, each a JSON object. A bad
/// name, value or size is reported at its position.
#[derive(Debug, Clone, Default)]
pub(super) struct AppCaps(pub PeerCapMap);

impl<'de> Deserialize<'de> for AppCaps {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AppCaps;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of capability name → array of JSON objects")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<AppCaps, A::Error> {
                let mut caps = PeerCapMap::new();
                let mut bytes = 0usize;
                while let Some(name) = map.next_key::<CapName>()? {
                    let values = map.next_value_seed(CapValues { name: &name.0 })?;
                    bytes +=
                        name.0.len() + values.iter().map(|v| v.to_string().len()).sum::<usize>();
                    if bytes > MAX_APP_BYTES {
                        return Err(de::Error::custom(format!(
                            "app: over {MAX_APP_BYTES} bytes of capabilities in one grant"
                        )));
                    }
                    if caps.insert(name.0.clone(), values).is_some() {
                        return Err(de::Error::custom(format!(
                            "app: capability {:?} is named twice",
                            name.0
                        )));
                    }
                }
                if caps.is_empty() {
                    return Err(de::Error::custom(
                        "app is empty: expected at least one capability (\"example.com/cap/name\": [{...}]), or an \"ip\" list instead",
                    ));
                }
                Ok(AppCaps(caps))
            }
        }
        d.deserialize_any(V)
    }
}

/// A capability name: `DOMAIN/PATH`, like `tailscale.com/cap/tsrecorder`.
#[derive(Debug, Clone)]
pub(super) struct CapName(pub String);
string_leaf!(
    CapName,
    String,
    "a capability name (example.com/cap/name)",
    |s| {
        let valid = s.len() <= MAX_CAP_NAME
            && s.split_once('/').is_some_and(|(domain, path)| {
                domain.contains('.')
                    && domain.split('.').all(|label| {
                        !label.is_empty()
                            && !label.starts_with('-')
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    })
                    && !path.is_empty()
                    && path.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/')
                    })
            });
        if valid {
            Ok(s.to_owned())
        } else {
            Err(format!(
                "capability name {s:?}: expected DOMAIN/NAME in lower-case letters, digits and '-' for the domain, like example.com/cap/name (at most {MAX_CAP_NAME} bytes)"
            ))
        }
    }
);

/// The values of capability `name`: an array of JSON objects; the
/// recorder's capability is checked for its own shape.
struct CapValues<'a> {
    name: &'a str,
}

impl<'de> de::DeserializeSeed<'de> for CapValues<'_> {
    type Value = Vec<Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Value>, D::Error> {
        struct V<'a>(&'a str);
        impl<'de> Visitor<'de> for V<'_> {
            type Value = Vec<Value>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an array of JSON objects for capability {:?}", self.0)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
                let mut values = Vec::new();
                while let Some(CapValue(value)) = seq.next_element()? {
                    values.push(value);
                }
                if self.0 == RECORDER_CAP {
                    recorder_actions(&values).map_err(de::Error::custom)?;
                }
                Ok(values)
            }
        }
        d.deserialize_any(V(self.name))
    }
}

/// One capability value: a JSON object, kept as written.
struct CapValue(Value);

impl<'de> Deserialize<'de> for CapValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CapValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a capability value (a JSON object)")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<CapValue, A::Error> {
                Value::deserialize(de::value::MapAccessDeserializer::new(map)).map(CapValue)
            }
        }
        d.deserialize_any(V)
    }
}

/// A grant field we parse only to refuse it with a clear message.
#[derive(Debug)]
pub(super) struct Unsupported<T>(std::marker::PhantomData<T>);

/// What [`Unsupported`] refuses.
pub(super) trait Feature {
    const MESSAGE: &'static str;
}
#[derive(Debug)]
pub(super) struct ViaGrant;
impl Feature for ViaGrant {
    const MESSAGE: &'static str =
        "grants: \"via\" (routing through chosen routers) is not supported yet";
}
#[derive(Debug)]
pub(super) struct PostureGrant;
impl Feature for PostureGrant {
    const MESSAGE: &'static str = "grants: \"srcPosture\" (device posture) is not supported yet";
}

impl<'de, T: Feature> Deserialize<'de> for Unsupported<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Feature> Visitor<'de> for V<T> {
            type Value = Unsupported<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(T::MESSAGE)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(de::Error::custom(T::MESSAGE))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(de::Error::custom(T::MESSAGE))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Err(E::custom(T::MESSAGE))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

// --- parsing helpers -------------------------------------------------------

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `s` looks like a user: `local@domain`, printable, no spaces.
pub(crate) fn is_user(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && s.len() <= 254
        && !local.contains(':')
        && s.chars().all(|c| c.is_ascii_graphic())
}

fn defined_group(s: &str) -> Result<(), String> {
    match with_names(|n| n.groups.contains(s)) {
        Some(false) => Err(format!("group {s:?} is not defined in \"groups\"")),
        _ => Ok(()),
    }
}

fn defined_tag(s: &str) -> Result<(), String> {
    match with_names(|n| n.tags.contains(s)) {
        Some(false) => Err(format!(
            "tag {s:?} is not defined in \"tagOwners\" (tag not found)"
        )),
        _ => Ok(()),
    }
}

fn parse_prefix(s: &str) -> Result<IpNet, String> {
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(addr));
    }
    let prefix: IpNet = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address or prefix (like 10.0.0.0/8)"))?;
    if prefix.trunc() != prefix {
        return Err(format!(
            "{s} has host bits set; did you mean {}?",
            prefix.trunc()
        ));
    }
    Ok(prefix)
}

/// Parses an alias: `*`, a user, `group:`, `tag:`, `autogroup:`, a host
/// name, or an IP address or prefix.
fn parse_alias(s: &str) -> Result<Alias, String> {
    if s == "*" {
        return Ok(Alias::Any);
    }
    if let Some(name) = s.strip_prefix("autogroup:") {
        return match name {
            "member" => Ok(Alias::AutoGroup(AutoGroup::Member)),
            "tagged" => Ok(Alias::AutoGroup(AutoGroup::Tagged)),
            "self" => Ok(Alias::AutoGroup(AutoGroup::SelfDevices)),
            "internet" => Ok(Alias::AutoGroup(AutoGroup::Internet)),
            _ => Err(format!(
                "{s:?}: unknown or unsupported autogroup; expected autogroup:member, autogroup:tagged, autogroup:self or autogroup:internet"
            )),
        };
    }
    if let Some(site) = parse_site(s) {
        return site.map(|(site, range)| Alias::Site { site, range });
    }
    if s.starts_with("group:") {
        defined_group(s)?;
        return Ok(Alias::Group(s.to_owned()));
    }
    if s.starts_with("tag:") {
        validate_tag(s).map_err(|e| e.to_string())?;
        defined_tag(s)?;
        return Ok(Alias::Tag(s.to_owned()));
    }
    if is_user(s) {
        return Ok(Alias::User(s.to_owned()));
    }
    if s.contains([':', '/']) || s.parse::<IpAddr>().is_ok() {
        return parse_prefix(s).map(Alias::Prefix);
    }
    if valid_name(s) {
        return match with_names(|n| n.hosts.contains(s)) {
            Some(false) => Err(format!(
                "{s:?} is not a user, group:, tag:, autogroup:, IP address or a host defined in \"hosts\""
            )),
            _ => Ok(Alias::Host(s.to_owned())),
        };
    }
    Err(format!(
        "{s:?}: expected *, a user (name@domain), group:NAME, tag:NAME, autogroup:NAME, a host or an IP prefix"
    ))
}

/// Splits `alias:ports` at the last colon; `[v6]:ports` and
/// `[v6/len]:ports` keep their brackets out of the alias.
fn split_host_ports(s: &str) -> Result<(&str, &str), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let Some((host, ports)) = rest.split_once(']') else {
            return Err(format!(
                "destination {s:?}: missing ']' after the IPv6 address"
            ));
        };
        let Some(ports) = ports.strip_prefix(':') else {
            return Err(format!("destination {s:?}: expected [address]:ports"));
        };
        return Ok((host, ports));
    }
    s.rsplit_once(':')
        .ok_or_else(|| format!("destination {s:?}: expected alias:ports, like tag:web:443 or *:*"))
}

/// Parses `*`, `22`, `80-90` or a comma-separated list of those.
pub(super) fn parse_ports(s: &str) -> Result<Vec<PortRange>, String> {
    if s == "*" {
        return Ok(vec![PortRange::ANY]);
    }
    let mut out = Vec::new();
    for part in s.split(',') {
        let port = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| format!("invalid port range {part:?}: expected *, PORT, FIRST-LAST or a comma-separated list"))
        };
        let range = match part.split_once('-') {
            Some((a, b)) => {
                let (first, last) = (port(a)?, port(b)?);
                if first > last {
                    return Err(format!(
                        "invalid port range {part:?}: first port is above the last"
                    ));
                }
                PortRange { first, last }
            }
            None => {
                let p = port(part)?;
                PortRange { first: p, last: p }
            }
        };
        if range.first == 0 {
            // As Tailscale: port 0 is no port; every port is written `*`.
            return Err(format!(
                "invalid port range {part:?}: the first port must be above 0 (write * for every port)"
            ));
        }
        out.push(range);
    }
    Ok(out)
}

fn parse_proto(s: &str) -> Result<u8, String> {
    let number = match s.to_ascii_lowercase().as_str() {
        "icmp" => 1,
        "igmp" => 2,
        "ipv4" | "ip-in-ip" => 4,
        "tcp" => 6,
        "egp" => 8,
        "igp" => 9,
        "udp" => 17,
        "gre" => 47,
        "esp" => 50,
        "ah" => 51,
        "ipv6-icmp" | "icmpv6" => 58,
        "sctp" => 132,
        other => other.parse::<u8>().map_err(|_| {
            format!("protocol {s:?}: expected a name (tcp, udp, icmp, ipv6-icmp, sctp, gre, esp, ah, igmp) or a number 0-255")
        })?,
    };
    Ok(number)
}

/// Whether a protocol has ports (TCP, UDP, SCTP).
pub(super) fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132)
}
