//! The appliance's own nftables table, compiled from a declarative
//! [`FirewallPolicy`] into one atomic batch and read back to verify, as
//! mullvad's `talpid-core` firewall does.
//!
//! The batch is `add table; delete table; add table, chains, rules`. Adding
//! the table first makes the delete valid whether or not it existed, and
//! because nf_tables applies a batch as one transaction, the host never sees
//! a half-built table: it has either the old rules or the new ones.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nftnl::expr::{
    Bitwise, Cmp, CmpOp, Conntrack, Counter, Immediate, InterfaceName, Ipv4HeaderField,
    Ipv6HeaderField, Masquerade, Meta, Nat, NatType, NetworkHeaderField, Payload, Register, States,
    TcpHeaderField, TransportHeaderField, Verdict,
};
use nftnl::{Batch, Chain, ChainType, Hook, MsgType, Policy, ProtoFamily, Rule, Table};

use crate::nfnetlink::{self, NfError, NfSocket, consts};

/// Declarative firewall state for the appliance's own nftables table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallPolicy {
    /// Name of the `inet` table, e.g. `causeway`; the appliance owns it entirely.
    pub table: String,
    /// The tailnet TUN interface, e.g. `cw0`.
    pub tun_interface: String,
    /// The tailnet's IPv4 range, normally `100.64.0.0/10`.
    pub tailnet_v4: Ipv4Net,
    /// The tailnet's IPv6 ULA /48, if it has one.
    pub tailnet_v6: Option<Ipv6Net>,
    /// Subnet routes whose traffic from the tailnet is masqueraded when it leaves via a non-tun interface.
    pub masquerade: Vec<IpNet>,
    /// Whether this host forwards for the tailnet (a subnet router). If so,
    /// the forward chain drops everything but what the rules accept:
    /// packets from the tun interface to [`FirewallPolicy::forward_to`],
    /// and replies (conntrack established or related) into the tun
    /// interface. If not, the forward chain is empty and accepts.
    pub forward: bool,
    /// The subnet routes packets from the tailnet may be forwarded to.
    pub forward_to: Vec<IpNet>,
    /// An exit node's egress interface: forwarded packets to a default
    /// route (`0.0.0.0/0`, and `::/0` if [`ExitEgress::ipv6`]) in
    /// [`FirewallPolicy::forward_to`] are accepted only out of it, so
    /// they never leave by another interface (the public one).
    pub egress: Option<ExitEgress>,
}

/// Where an exit node's forwarded internet-bound traffic must leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitEgress {
    /// The egress interface, e.g. `eth1`.
    pub interface: String,
    /// IPv6 is routed out of it too; else IPv6 keeps any interface.
    pub ipv6: bool,
}

/// Why applying, removing or inspecting the firewall failed.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The policy was rejected before anything was sent to the kernel.
    #[error("invalid firewall policy: {field} {value:?}: {expected}")]
    InvalidPolicy {
        /// Which policy field is wrong.
        field: &'static str,
        /// The offending value.
        value: String,
        /// What was expected instead.
        expected: &'static str,
    },
    /// The netfilter netlink socket could not be opened or configured.
    #[error("opening the netfilter netlink socket")]
    Socket(#[source] std::io::Error),
    /// Sending a batch or request to the kernel failed.
    #[error("sending to nf_tables while {operation}")]
    Send {
        /// What we were doing.
        operation: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// Receiving the kernel's reply failed.
    #[error("receiving nf_tables replies while {operation}")]
    Receive {
        /// What we were doing.
        operation: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel rejected a message; for a batch, nothing in it was applied.
    #[error("nf_tables rejected {message} (errno {errno}: {description})")]
    KernelRejected {
        /// The message the kernel refused, e.g. `add rule to chain postrouting`.
        message: String,
        /// The positive errno the kernel returned.
        errno: i32,
        /// `strerror` of the errno plus the kernel's extended-ack text, if any.
        description: String,
    },
    /// The kernel's reply could not be decoded, or was incomplete.
    #[error("unexpected nf_tables reply while {operation}: {detail}")]
    BadReply {
        /// What we were doing.
        operation: String,
        /// What was wrong with the reply.
        detail: String,
    },
    /// The table read back from the kernel differs from what was applied.
    #[error("nftables table {table:?} read back does not match the policy: {detail}")]
    ReadBackMismatch {
        /// The table that was verified.
        table: String,
        /// Every difference found.
        detail: String,
    },
}

/// Applies the policy as one atomic nftables batch, then reads the table back and verifies it.
///
/// The batch adds the table (so the delete cannot fail), deletes it, and adds
/// the table, chains and rules. Invalid policies are rejected before anything
/// is sent. The read-back lists the table's chains and rules over netlink and
/// checks chain names, types, hooks, priorities, rule counts and the
/// expression kinds of every rule.
pub fn apply_firewall(policy: &FirewallPolicy) -> Result<(), FirewallError> {
    let plan = TablePlan::from_policy(policy)?;
    plan.apply("applying the firewall")?;
    tracing::debug!(
        table = %policy.table,
        masquerade = policy.masquerade.len(),
        forward = policy.forward,
        "applied firewall"
    );
    Ok(())
}

/// Removes the table in one batch; it is not an error if it does not exist.
pub fn remove_firewall(table: &str) -> Result<(), FirewallError> {
    let name = table_name(table)?;
    let mut socket = NfSocket::open().map_err(|e| map_nf(e, "removing the firewall", &[]))?;
    let nft_table = Table::new(&name, ProtoFamily::Inet);
    let mut batch = Batch::new();
    batch.add(&nft_table, MsgType::Add);
    batch.add(&nft_table, MsgType::Del);
    let batch = batch.finalize();
    let messages = vec![
        format!("add table {table}"),
        format!("delete table {table}"),
    ];
    socket
        .send_batch(&batch)
        .map_err(|e| map_nf(e, "removing the firewall", &seq_labels(&batch, &messages)))?;
    tracing::debug!(table, "removed firewall");
    Ok(())
}

/// Whether the `inet` table exists (for tests and `status`).
pub fn firewall_exists(table: &str) -> Result<bool, FirewallError> {
    let name = table_name(table)?;
    let operation = "looking up the firewall table";
    let mut socket = NfSocket::open().map_err(|e| map_nf(e, operation, &[]))?;
    let value = name.as_bytes_with_nul();
    let reply = socket
        .get_one(
            consts::NFT_MSG_GETTABLE,
            consts::NFPROTO_INET,
            &[(NFTA_TABLE_NAME, value)],
        )
        .map_err(|e| map_nf(e, operation, &[]))?;
    Ok(reply.is_some())
}

// Attribute numbers from linux/netfilter/nf_tables.h.
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_EXPR_NAME: u16 = 1;

/// `NFT_NAME_MAXLEN` minus the terminating NUL.
const MAX_TABLE_NAME: usize = 255;
/// `IFNAMSIZ` minus the terminating NUL.
const MAX_IFNAME: usize = 15;
/// `NF_IP_PRI_NAT_SRC`, nft's `srcnat`.
const PRIORITY_SRCNAT: i32 = 100;
/// `NF_IP_PRI_FILTER`, nft's `filter`.
const PRIORITY_FILTER: i32 = 0;

const CHAIN_POSTROUTING: &str = "postrouting";
const CHAIN_FORWARD: &str = "forward";

/// `NF_IP_PRI_NAT_DST`, nft's `dstnat`.
const PRIORITY_DSTNAT: i32 = -100;

/// A pure description of the table: what is sent, and what the read-back must find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TablePlan {
    pub(crate) table: CString,
    pub(crate) chains: Vec<ChainPlan>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainPlan {
    pub(crate) name: &'static str,
    pub(crate) kind: ChainKind,
    /// What happens to a packet no rule accepts.
    pub(crate) policy: Policy,
    pub(crate) rules: Vec<RulePlan>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChainKind {
    /// `type nat hook postrouting priority srcnat`.
    SourceNat,
    /// `type filter hook forward priority filter`.
    ForwardFilter,
    /// `type nat hook output priority dstnat`: the host's own packets.
    OutputNat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RulePlan {
    pub(crate) comment: CString,
    pub(crate) matches: Vec<Match>,
    pub(crate) action: Action,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Match {
    InputInterface(CString),
    OutputInterface(CString),
    OutputInterfaceNot(CString),
    /// `meta nfproto`, needed in an `inet` table before reading IP header fields.
    Ipv4,
    Ipv6,
    Source(IpNet),
    Destination(IpNet),
    /// `ip saddr != PREFIX`.
    SourceNot(IpNet),
    /// `ip daddr != PREFIX`.
    DestinationNot(IpNet),
    /// `meta l4proto N`, needed before reading ports.
    Protocol(u8),
    /// `th dport N` (after [`Match::Protocol`] for TCP or UDP).
    DestinationPort(u16),
    /// `meta mark & MASK != MARK`: not one of the given sockets' packets.
    MarkNot {
        /// The mark.
        mark: u32,
        /// The bits compared.
        mask: u32,
    },
    EstablishedOrRelated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Masquerade,
    Accept,
    /// `dnat to ADDRESS:PORT` (the rule must match the address's family).
    DestinationNat(IpAddr, u16),
}

/// What the read-back found for one chain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FoundChain {
    chain_type: String,
    hook: Option<(u32, i32)>,
    /// The verdict for packets no rule accepts (`NF_ACCEPT` or `NF_DROP`).
    policy: Option<u32>,
    /// Expression kinds of each rule, in order.
    rules: Vec<Vec<String>>,
}

impl TablePlan {
    /// Sends the plan as one atomic batch, then reads the table back and
    /// verifies it. `operation` names what is being done, for errors.
    pub(crate) fn apply(&self, operation: &str) -> Result<(), FirewallError> {
        let mut socket = NfSocket::open().map_err(|e| map_nf(e, operation, &[]))?;
        let (batch, messages) = self.to_batch();
        socket
            .send_batch(&batch)
            .map_err(|e| map_nf(e, operation, &seq_labels(&batch, &messages)))?;
        let found = read_table(&mut socket, &self.table.to_string_lossy())?;
        self.verify(found)
    }

    fn from_policy(policy: &FirewallPolicy) -> Result<Self, FirewallError> {
        let table = table_name(&policy.table)?;
        let tun = interface_name("tun_interface", &policy.tun_interface)?;
        let egress = policy
            .egress
            .as_ref()
            .map(|e| interface_name("egress.interface", &e.interface).map(|name| (name, e.ipv6)))
            .transpose()?;
        let tailnet_v4 = IpNet::V4(canonical_v4("tailnet_v4", policy.tailnet_v4)?);
        let tailnet_v6 = policy
            .tailnet_v6
            .map(|net| canonical_v6("tailnet_v6", net).map(IpNet::V6))
            .transpose()?;

        let masquerade = prefix_set("masquerade", &policy.masquerade)?;
        let forward_to = prefix_set("forward_to", &policy.forward_to)?;

        let mut nat_rules = Vec::new();
        for prefix in masquerade {
            let (family, source) = match prefix {
                IpNet::V4(_) => (Match::Ipv4, tailnet_v4),
                IpNet::V6(_) => {
                    let Some(source) = tailnet_v6 else {
                        return Err(invalid(
                            "masquerade",
                            prefix,
                            "IPv4 prefixes only, because tailnet_v6 is not set",
                        ));
                    };
                    (Match::Ipv6, source)
                }
            };
            nat_rules.push(RulePlan {
                comment: comment(&format!("causeway: masquerade tailnet traffic to {prefix}")),
                matches: vec![
                    Match::OutputInterfaceNot(tun.clone()),
                    family,
                    Match::Source(source),
                    Match::Destination(prefix),
                ],
                action: Action::Masquerade,
            });
        }

        let forward_rules = if policy.forward {
            // Replies first: they are most of the packets.
            let mut rules = vec![RulePlan {
                comment: comment("causeway: forward replies into the tailnet"),
                matches: vec![
                    Match::OutputInterface(tun.clone()),
                    Match::EstablishedOrRelated,
                ],
                action: Action::Accept,
            }];
            for prefix in forward_to {
                let family = match prefix {
                    IpNet::V4(_) => Match::Ipv4,
                    IpNet::V6(_) => Match::Ipv6,
                };
                let mut matches = vec![Match::InputInterface(tun.clone())];
                let out = egress.as_ref().filter(|(_, ipv6)| {
                    prefix.prefix_len() == 0 && (prefix.addr().is_ipv4() || *ipv6)
                });
                let text = match out {
                    Some((name, _)) => {
                        matches.push(Match::OutputInterface(name.clone()));
                        format!(
                            "causeway: forward from the tailnet to {prefix} out of {}",
                            name.to_string_lossy()
                        )
                    }
                    None => format!("causeway: forward from the tailnet to {prefix}"),
                };
                matches.extend([family, Match::Destination(prefix)]);
                rules.push(RulePlan {
                    comment: comment(&text),
                    matches,
                    action: Action::Accept,
                });
            }
            rules
        } else {
            Vec::new()
        };
        // A subnet router forwards nothing but the rules above; a device's
        // empty forward chain leaves the host's forwarding alone.
        let forward_policy = if policy.forward {
            Policy::Drop
        } else {
            Policy::Accept
        };

        Ok(Self {
            table,
            chains: vec![
                ChainPlan {
                    name: CHAIN_POSTROUTING,
                    kind: ChainKind::SourceNat,
                    policy: Policy::Accept,
                    rules: nat_rules,
                },
                ChainPlan {
                    name: CHAIN_FORWARD,
                    kind: ChainKind::ForwardFilter,
                    policy: forward_policy,
                    rules: forward_rules,
                },
            ],
        })
    }

    /// Builds the batch and a label for each message in it, in order.
    fn to_batch(&self) -> (nftnl::FinalizedBatch, Vec<String>) {
        let table_label = self.table.to_string_lossy().into_owned();
        let table = Table::new(&self.table, ProtoFamily::Inet);
        let mut batch = Batch::new();
        let mut labels = Vec::new();
        batch.add(&table, MsgType::Add);
        labels.push(format!("add table {table_label}"));
        batch.add(&table, MsgType::Del);
        labels.push(format!("delete table {table_label}"));
        batch.add(&table, MsgType::Add);
        labels.push(format!("add table {table_label}"));

        for chain_plan in &self.chains {
            let chain_name =
                CString::new(chain_plan.name).expect("chain names are constants without NUL");
            let mut chain = Chain::new(&chain_name, &table);
            let (hook, priority, chain_type) = chain_plan.kind.hook();
            chain.set_hook(hook, priority);
            chain.set_type(chain_type);
            chain.set_policy(chain_plan.policy);
            batch.add(&chain, MsgType::Add);
            labels.push(format!("add chain {}", chain_plan.name));

            for rule_plan in &chain_plan.rules {
                let mut rule = Rule::new(&chain);
                rule_plan.add_to(&mut rule);
                batch.add(&rule, MsgType::Add);
                labels.push(format!(
                    "add rule to chain {} ({})",
                    chain_plan.name,
                    rule_plan.comment.to_string_lossy()
                ));
            }
        }
        (batch.finalize(), labels)
    }

    /// Compares what the kernel holds with the plan, naming every difference.
    fn verify(&self, mut found: BTreeMap<String, FoundChain>) -> Result<(), FirewallError> {
        let mut problems = Vec::new();
        for chain in &self.chains {
            let Some(got) = found.remove(chain.name) else {
                problems.push(format!("chain {} is missing", chain.name));
                continue;
            };
            let (hook, priority, chain_type) = chain.kind.hook();
            let want_type = chain_type_name(chain_type);
            if got.chain_type != want_type {
                problems.push(format!(
                    "chain {} has type {:?}, expected {want_type:?}",
                    chain.name, got.chain_type
                ));
            }
            let want_hook = (hook as u32, priority);
            if got.hook != Some(want_hook) {
                problems.push(format!(
                    "chain {} has hook/priority {:?}, expected {want_hook:?}",
                    chain.name, got.hook
                ));
            }
            let want_policy = chain.policy as u32;
            if got.policy != Some(want_policy) {
                problems.push(format!(
                    "chain {} has policy {:?}, expected {want_policy} ({:?})",
                    chain.name, got.policy, chain.policy
                ));
            }
            if got.rules.len() != chain.rules.len() {
                problems.push(format!(
                    "chain {} has {} rules, expected {}",
                    chain.name,
                    got.rules.len(),
                    chain.rules.len()
                ));
                continue;
            }
            for (index, (want, got)) in chain.rules.iter().zip(&got.rules).enumerate() {
                let want_kinds = want.expression_kinds();
                if *got != want_kinds {
                    problems.push(format!(
                        "chain {} rule {index} has expressions {got:?}, expected {want_kinds:?}",
                        chain.name
                    ));
                }
            }
        }
        for extra in found.keys() {
            problems.push(format!("unexpected chain {extra}"));
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(FirewallError::ReadBackMismatch {
            table: self.table.to_string_lossy().into_owned(),
            detail: problems.join("; "),
        })
    }
}

impl ChainKind {
    fn hook(self) -> (Hook, i32, ChainType) {
        match self {
            ChainKind::SourceNat => (Hook::PostRouting, PRIORITY_SRCNAT, ChainType::Nat),
            ChainKind::ForwardFilter => (Hook::Forward, PRIORITY_FILTER, ChainType::Filter),
            ChainKind::OutputNat => (Hook::Out, PRIORITY_DSTNAT, ChainType::Nat),
        }
    }
}

impl RulePlan {
    /// Appends the nftables expressions, mirroring what `nft` compiles for the same rule.
    fn add_to(&self, rule: &mut Rule<'_>) {
        // Comments are at most 128 bytes; ours are short constants plus a prefix.
        if rule.set_comment(&self.comment).is_err() {
            tracing::warn!(comment = ?self.comment, "nftables rule comment too long, skipped");
        }
        for m in &self.matches {
            match m {
                Match::InputInterface(name) => {
                    rule.add_expr(&Meta::IifName);
                    rule.add_expr(&Cmp::new(CmpOp::Eq, InterfaceName::Exact(name.clone())));
                }
                Match::OutputInterface(name) => {
                    rule.add_expr(&Meta::OifName);
                    rule.add_expr(&Cmp::new(CmpOp::Eq, InterfaceName::Exact(name.clone())));
                }
                Match::OutputInterfaceNot(name) => {
                    rule.add_expr(&Meta::OifName);
                    rule.add_expr(&Cmp::new(CmpOp::Neq, InterfaceName::Exact(name.clone())));
                }
                Match::Ipv4 => {
                    rule.add_expr(&Meta::NfProto);
                    rule.add_expr(&Cmp::new(CmpOp::Eq, nfproto(libc::NFPROTO_IPV4)));
                }
                Match::Ipv6 => {
                    rule.add_expr(&Meta::NfProto);
                    rule.add_expr(&Cmp::new(CmpOp::Eq, nfproto(libc::NFPROTO_IPV6)));
                }
                Match::Source(net) => add_prefix_match(rule, *net, true, CmpOp::Eq),
                Match::Destination(net) => add_prefix_match(rule, *net, false, CmpOp::Eq),
                Match::SourceNot(net) => add_prefix_match(rule, *net, true, CmpOp::Neq),
                Match::DestinationNot(net) => add_prefix_match(rule, *net, false, CmpOp::Neq),
                Match::Protocol(number) => {
                    rule.add_expr(&Meta::L4Proto);
                    rule.add_expr(&Cmp::new(CmpOp::Eq, *number));
                }
                Match::DestinationPort(port) => {
                    // nft's `th dport`: bytes 2-3 of the transport header,
                    // where TCP and UDP (and SCTP) both keep it.
                    rule.add_expr(&Payload::Transport(TransportHeaderField::Tcp(
                        TcpHeaderField::Dport,
                    )));
                    rule.add_expr(&Cmp::new(CmpOp::Eq, &port.to_be_bytes()[..]));
                }
                Match::MarkNot { mark, mask } => {
                    rule.add_expr(&Meta::Mark { set: false });
                    rule.add_expr(&Bitwise::new(*mask, 0u32));
                    rule.add_expr(&Cmp::new(CmpOp::Neq, *mark));
                }
                Match::EstablishedOrRelated => {
                    rule.add_expr(&Conntrack::State);
                    let mask = (States::ESTABLISHED | States::RELATED).bits();
                    rule.add_expr(&Bitwise::new(mask, 0u32));
                    rule.add_expr(&Cmp::new(CmpOp::Neq, 0u32));
                }
            }
        }
        rule.add_expr(&Counter);
        match self.action {
            Action::Masquerade => rule.add_expr(&Masquerade),
            Action::Accept => rule.add_expr(&Verdict::Accept),
            Action::DestinationNat(address, port) => {
                let family = match address {
                    IpAddr::V4(v4) => {
                        rule.add_expr(&Immediate::new(v4.octets(), Register::Reg1));
                        ProtoFamily::Ipv4
                    }
                    IpAddr::V6(v6) => {
                        rule.add_expr(&Immediate::new(v6.octets(), Register::Reg1));
                        ProtoFamily::Ipv6
                    }
                };
                rule.add_expr(&Immediate::new(port.to_be_bytes(), Register::Reg2));
                rule.add_expr(&Nat {
                    nat_type: NatType::DNat,
                    family,
                    ip_register: Register::Reg1,
                    port_register: Some(Register::Reg2),
                });
            }
        }
    }

    /// The kernel's names for the expressions [`RulePlan::add_to`] emits.
    pub(crate) fn expression_kinds(&self) -> Vec<String> {
        let mut kinds: Vec<&str> = Vec::new();
        for m in &self.matches {
            match m {
                Match::InputInterface(_)
                | Match::OutputInterface(_)
                | Match::OutputInterfaceNot(_)
                | Match::Ipv4
                | Match::Ipv6
                | Match::Protocol(_) => kinds.extend(["meta", "cmp"]),
                Match::DestinationPort(_) => kinds.extend(["payload", "cmp"]),
                Match::MarkNot { .. } => kinds.extend(["meta", "bitwise", "cmp"]),
                Match::Source(net)
                | Match::Destination(net)
                | Match::SourceNot(net)
                | Match::DestinationNot(net) => {
                    kinds.push("payload");
                    if net.prefix_len() != net.max_prefix_len() {
                        kinds.push("bitwise");
                    }
                    kinds.push("cmp");
                }
                Match::EstablishedOrRelated => kinds.extend(["ct", "bitwise", "cmp"]),
            }
        }
        kinds.push("counter");
        match self.action {
            Action::Masquerade => kinds.push("masq"),
            Action::Accept => kinds.push("immediate"),
            Action::DestinationNat(..) => kinds.extend(["immediate", "immediate", "nat"]),
        }
        kinds.into_iter().map(str::to_owned).collect()
    }
}

/// `ip saddr 100.64.0.0/10` (or `!=` with [`CmpOp::Neq`]): load the
/// field, mask off host bits, compare.
fn add_prefix_match(rule: &mut Rule<'_>, net: IpNet, source: bool, op: CmpOp) {
    let field = match (net, source) {
        (IpNet::V4(_), true) => NetworkHeaderField::Ipv4(Ipv4HeaderField::Saddr),
        (IpNet::V4(_), false) => NetworkHeaderField::Ipv4(Ipv4HeaderField::Daddr),
        (IpNet::V6(_), true) => NetworkHeaderField::Ipv6(Ipv6HeaderField::Saddr),
        (IpNet::V6(_), false) => NetworkHeaderField::Ipv6(Ipv6HeaderField::Daddr),
    };
    rule.add_expr(&Payload::Network(field));
    if net.prefix_len() != net.max_prefix_len() {
        let zero = match net {
            IpNet::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpNet::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        rule.add_expr(&Bitwise::new(net.netmask(), zero));
    }
    rule.add_expr(&Cmp::new(op, net.network()));
}

fn nfproto(value: i32) -> u8 {
    u8::try_from(value).expect("NFPROTO_IPV4/IPV6 are small constants")
}

fn chain_type_name(chain_type: ChainType) -> &'static str {
    match chain_type {
        ChainType::Filter => "filter",
        ChainType::Route => "route",
        ChainType::Nat => "nat",
    }
}

pub(crate) fn comment(text: &str) -> CString {
    CString::new(text).expect("comments are built from constants and prefixes, which have no NUL")
}

pub(crate) fn invalid(
    field: &'static str,
    value: impl std::fmt::Display,
    expected: &'static str,
) -> FirewallError {
    FirewallError::InvalidPolicy {
        field,
        value: value.to_string(),
        expected,
    }
}

pub(crate) fn table_name(name: &str) -> Result<CString, FirewallError> {
    const EXPECTED: &str = "1 to 255 bytes without NUL";
    if name.is_empty() || name.len() > MAX_TABLE_NAME {
        return Err(invalid("table", name, EXPECTED));
    }
    CString::new(name).map_err(|_| invalid("table", name, EXPECTED))
}

/// Whether the kernel accepts `name` as an interface name (its
/// dev_valid_name(): 1 to 15 bytes, not "." or "..", no '/', ':', NUL or
/// whitespace).
pub fn is_interface_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
}

pub(crate) fn interface_name(field: &'static str, name: &str) -> Result<CString, FirewallError> {
    // The kernel's dev_valid_name(): at most IFNAMSIZ-1 bytes, not "." or
    // "..", no '/', ':' or whitespace.
    const EXPECTED: &str = "an interface name of 1 to 15 bytes without '/', ':', NUL or whitespace";
    if !is_interface_name(name) {
        return Err(invalid(field, name, EXPECTED));
    }
    CString::new(name).map_err(|_| invalid(field, name, EXPECTED))
}

/// The prefixes as a set (deterministic order on the wire, duplicates
/// collapse), refusing any with host bits.
fn prefix_set(field: &'static str, prefixes: &[IpNet]) -> Result<BTreeSet<IpNet>, FirewallError> {
    let mut set = BTreeSet::new();
    for prefix in prefixes {
        if prefix.trunc() != *prefix {
            return Err(invalid(
                field,
                prefix,
                "a network prefix without host bits, e.g. 198.19.1.0/24",
            ));
        }
        set.insert(*prefix);
    }
    Ok(set)
}

fn canonical_v4(field: &'static str, net: Ipv4Net) -> Result<Ipv4Net, FirewallError> {
    if net.trunc() != net {
        return Err(invalid(
            field,
            net,
            "a network prefix without host bits, e.g. 100.64.0.0/10",
        ));
    }
    Ok(net)
}

fn canonical_v6(field: &'static str, net: Ipv6Net) -> Result<Ipv6Net, FirewallError> {
    if net.trunc() != net {
        return Err(invalid(
            field,
            net,
            "a network prefix without host bits, e.g. fd7a:115c:a1e0::/48",
        ));
    }
    Ok(net)
}

/// Lists the table's chains and rules over netlink.
fn read_table(
    socket: &mut NfSocket,
    table: &str,
) -> Result<BTreeMap<String, FoundChain>, FirewallError> {
    let operation = "reading the firewall table back";
    let table_attr = nfnetlink::str_value(table);
    let bad = |e: NfError| map_nf(e, operation, &[]);

    let mut chains: BTreeMap<String, FoundChain> = BTreeMap::new();
    let chain_bodies = socket
        .dump(
            consts::NFT_MSG_GETCHAIN,
            consts::NFPROTO_INET,
            &[(NFTA_CHAIN_TABLE, &table_attr)],
        )
        .map_err(bad)?;
    for body in &chain_bodies {
        let attrs = nfnetlink::object_attrs(body).map_err(bad)?;
        let mut name = None;
        let mut in_table = false;
        let mut found = FoundChain::default();
        for (kind, value) in attrs {
            match kind {
                NFTA_CHAIN_TABLE => in_table = nfnetlink::attr_str(value) == table,
                NFTA_CHAIN_NAME => name = Some(nfnetlink::attr_str(value)),
                NFTA_CHAIN_TYPE => found.chain_type = nfnetlink::attr_str(value),
                NFTA_CHAIN_HOOK => found.hook = Some(parse_hook(value).map_err(bad)?),
                NFTA_CHAIN_POLICY => {
                    found.policy = Some(nfnetlink::attr_be_u32(value).map_err(bad)?);
                }
                _ => {}
            }
        }
        // Older kernels ignore the table filter on chain dumps.
        if let (true, Some(name)) = (in_table, name) {
            chains.insert(name, found);
        }
    }

    let rule_bodies = socket
        .dump(
            consts::NFT_MSG_GETRULE,
            consts::NFPROTO_INET,
            &[(NFTA_RULE_TABLE, &table_attr)],
        )
        .map_err(bad)?;
    for body in &rule_bodies {
        let attrs = nfnetlink::object_attrs(body).map_err(bad)?;
        let mut chain = None;
        let mut in_table = false;
        let mut kinds = Vec::new();
        for (kind, value) in attrs {
            match kind {
                NFTA_RULE_TABLE => in_table = nfnetlink::attr_str(value) == table,
                NFTA_RULE_CHAIN => chain = Some(nfnetlink::attr_str(value)),
                NFTA_RULE_EXPRESSIONS => {
                    for (_, element) in nfnetlink::parse_attrs(value).map_err(bad)? {
                        for (field, data) in nfnetlink::parse_attrs(element).map_err(bad)? {
                            if field == NFTA_EXPR_NAME {
                                kinds.push(nfnetlink::attr_str(data));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let (true, Some(chain)) = (in_table, chain) else {
            continue;
        };
        chains.entry(chain).or_default().rules.push(kinds);
    }
    Ok(chains)
}

fn parse_hook(value: &[u8]) -> Result<(u32, i32), NfError> {
    let mut hooknum = None;
    let mut priority = None;
    for (kind, data) in nfnetlink::parse_attrs(value)? {
        match kind {
            NFTA_HOOK_HOOKNUM => hooknum = Some(nfnetlink::attr_be_u32(data)?),
            // Sent as a big-endian u32 holding a signed priority.
            NFTA_HOOK_PRIORITY => {
                priority = Some(i32::from_be_bytes(
                    nfnetlink::attr_be_u32(data)?.to_be_bytes(),
                ));
            }
            _ => {}
        }
    }
    match (hooknum, priority) {
        (Some(hooknum), Some(priority)) => Ok((hooknum, priority)),
        _ => Err(NfError::Malformed(
            "chain hook without number or priority".to_owned(),
        )),
    }
}

/// Labels for a batch's sequence numbers, accounting for the begin and end
/// messages that carry sequence numbers only on kernels that acknowledge them.
fn seq_labels(batch: &nftnl::FinalizedBatch, messages: &[String]) -> Vec<(u32, String)> {
    let seqs = batch.sequence_numbers();
    let total = usize::try_from(seqs.end - seqs.start).unwrap_or(usize::MAX);
    let mut labels = Vec::new();
    let mut seq = seqs.start;
    if total == messages.len() + 2 {
        labels.push((seq, "batch begin".to_owned()));
        seq += 1;
    }
    for message in messages {
        labels.push((seq, message.clone()));
        seq += 1;
    }
    if total == messages.len() + 2 {
        labels.push((seq, "batch end".to_owned()));
    }
    labels
}

fn map_nf(error: NfError, operation: &str, labels: &[(u32, String)]) -> FirewallError {
    match error {
        NfError::Socket(source) => FirewallError::Socket(source),
        NfError::Send(source) => FirewallError::Send {
            operation: operation.to_owned(),
            source,
        },
        NfError::Receive(source) => FirewallError::Receive {
            operation: operation.to_owned(),
            source,
        },
        NfError::Rejected {
            seq,
            errno,
            message,
        } => {
            let label = labels
                .iter()
                .find(|(s, _)| *s == seq)
                .map_or_else(|| operation.to_owned(), |(_, label)| label.clone());
            // io::Error's Display appends " (os error N)"; the errno is a field already.
            let os_error = std::io::Error::from_raw_os_error(errno).to_string();
            let mut description = match os_error.rsplit_once(" (os error") {
                Some((text, _)) => text.to_owned(),
                None => os_error,
            };
            if let Some(text) = message {
                description.push_str(": ");
                description.push_str(&text);
            }
            FirewallError::KernelRejected {
                message: label,
                errno,
                description,
            }
        }
        NfError::Malformed(detail) => FirewallError::BadReply {
            operation: operation.to_owned(),
            detail,
        },
        NfError::Unacknowledged(seqs) => FirewallError::BadReply {
            operation: operation.to_owned(),
            detail: format!("no acknowledgement for batch messages {seqs:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> FirewallPolicy {
        FirewallPolicy {
            table: "causeway".to_owned(),
            tun_interface: "cw0".to_owned(),
            tailnet_v4: "100.64.0.0/10".parse().expect("net"),
            tailnet_v6: Some("fd7a:115c:a1e0::/48".parse().expect("net")),
            masquerade: vec![
                "198.19.0.0/16".parse().expect("net"),
                "198.18.0.0/16".parse().expect("net"),
                "198.18.0.0/16".parse().expect("net"),
            ],
            forward: true,
            forward_to: vec![
                "198.19.0.0/16".parse().expect("net"),
                "fd00:1:2::/64".parse().expect("net"),
            ],
            egress: None,
        }
    }

    #[test]
    fn plan_sorts_and_dedupes_masquerade_prefixes() {
        let plan = TablePlan::from_policy(&policy()).expect("valid");

        let nat = &plan.chains[0];
        assert_eq!(nat.name, CHAIN_POSTROUTING);
        let destinations: Vec<&Match> = nat.rules.iter().map(|r| &r.matches[3]).collect();
        assert_eq!(
            destinations,
            [
                &Match::Destination("198.18.0.0/16".parse().expect("net")),
                &Match::Destination("198.19.0.0/16".parse().expect("net")),
            ]
        );
        assert_eq!(plan.chains[1].rules.len(), 3);
    }

    #[test]
    fn a_router_forwards_only_to_its_routes_and_replies_into_the_tailnet() {
        let plan = TablePlan::from_policy(&policy()).expect("valid");

        let forward = &plan.chains[1];
        assert_eq!(forward.policy, Policy::Drop);
        let tun = CString::new("cw0").expect("name");
        let rules: Vec<(&[Match], Action)> = forward
            .rules
            .iter()
            .map(|r| (r.matches.as_slice(), r.action))
            .collect();
        assert_eq!(
            rules,
            [
                (
                    &[
                        Match::OutputInterface(tun.clone()),
                        Match::EstablishedOrRelated
                    ][..],
                    Action::Accept
                ),
                (
                    &[
                        Match::InputInterface(tun.clone()),
                        Match::Ipv4,
                        Match::Destination("198.19.0.0/16".parse().expect("net")),
                    ][..],
                    Action::Accept
                ),
                (
                    &[
                        Match::InputInterface(tun),
                        Match::Ipv6,
                        Match::Destination("fd00:1:2::/64".parse().expect("net")),
                    ][..],
                    Action::Accept
                ),
            ]
        );
        assert_eq!(plan.chains[0].policy, Policy::Accept);
    }

    #[test]
    fn expression_kinds_follow_the_matches() {
        let plan = TablePlan::from_policy(&policy()).expect("valid");

        let kinds = plan.chains[0].rules[0].expression_kinds();

        let expected = [
            "meta", "cmp", "meta", "cmp", "payload", "bitwise", "cmp", "payload", "bitwise", "cmp",
            "counter", "masq",
        ];
        assert_eq!(kinds, expected);
        let established = plan.chains[1].rules[0].expression_kinds();
        assert_eq!(
            established,
            [
                "meta",
                "cmp",
                "ct",
                "bitwise",
                "cmp",
                "counter",
                "immediate"
            ]
        );
    }

    #[test]
    fn an_exit_node_with_an_egress_interface_forwards_to_the_internet_only_out_of_it() {
        let exit = FirewallPolicy {
            forward_to: vec![
                "0.0.0.0/0".parse().expect("net"),
                "::/0".parse().expect("net"),
                "198.19.0.0/16".parse().expect("net"),
            ],
            egress: Some(ExitEgress {
                interface: "eth1".to_owned(),
                ipv6: false,
            }),
            ..policy()
        };

        let plan = TablePlan::from_policy(&exit).expect("valid");

        let tun = CString::new("cw0").expect("name");
        let eth1 = CString::new("eth1").expect("name");
        let matches: Vec<&[Match]> = plan.chains[1]
            .rules
            .iter()
            .map(|r| r.matches.as_slice())
            .collect();
        assert_eq!(
            matches[1..],
            [
                &[
                    Match::InputInterface(tun.clone()),
                    Match::OutputInterface(eth1),
                    Match::Ipv4,
                    Match::Destination("0.0.0.0/0".parse().expect("net")),
                ][..],
                &[
                    Match::InputInterface(tun.clone()),
                    Match::Ipv4,
                    Match::Destination("198.19.0.0/16".parse().expect("net")),
                ][..],
                &[
                    Match::InputInterface(tun),
                    Match::Ipv6,
                    Match::Destination("::/0".parse().expect("net")),
                ][..],
            ]
        );
        let bad = FirewallPolicy {
            egress: Some(ExitEgress {
                interface: "eth/1".to_owned(),
                ipv6: true,
            }),
            ..exit
        };
        let error = TablePlan::from_policy(&bad).expect_err("a slash");
        assert!(
            matches!(
                error,
                FirewallError::InvalidPolicy {
                    field: "egress.interface",
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn a_device_policy_keeps_both_chains_empty() {
        let device = FirewallPolicy {
            masquerade: Vec::new(),
            forward: false,
            forward_to: Vec::new(),
            ..policy()
        };

        let plan = TablePlan::from_policy(&device).expect("valid");

        assert_eq!(plan.chains.len(), 2);
        assert!(plan.chains.iter().all(|c| c.rules.is_empty()));
        assert!(plan.chains.iter().all(|c| c.policy == Policy::Accept));
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases = [
            (
                FirewallPolicy {
                    table: String::new(),
                    ..policy()
                },
                "table",
            ),
            (
                FirewallPolicy {
                    tun_interface: "a/b".to_owned(),
                    ..policy()
                },
                "tun_interface",
            ),
            (
                FirewallPolicy {
                    tun_interface: "x".repeat(16),
                    ..policy()
                },
                "tun_interface",
            ),
            (
                FirewallPolicy {
                    tailnet_v4: "100.64.0.1/10".parse().expect("net"),
                    ..policy()
                },
                "tailnet_v4",
            ),
            (
                FirewallPolicy {
                    masquerade: vec!["198.18.0.1/16".parse().expect("net")],
                    ..policy()
                },
                "masquerade",
            ),
            (
                FirewallPolicy {
                    forward_to: vec!["198.19.1.1/24".parse().expect("net")],
                    ..policy()
                },
                "forward_to",
            ),
        ];

        for (bad, field) in cases {
            let error = TablePlan::from_policy(&bad).expect_err("invalid");
            assert!(
                matches!(error, FirewallError::InvalidPolicy { field: f, .. } if f == field),
                "{field}: {error:?}"
            );
        }
        assert!(
            TablePlan::from_policy(&FirewallPolicy {
                tun_interface: "x".repeat(15),
                ..policy()
            })
            .is_ok()
        );
    }

    #[test]
    fn verify_reports_a_missing_rule() {
        let plan = TablePlan::from_policy(&policy()).expect("valid");
        let mut found = BTreeMap::new();
        for chain in &plan.chains {
            let (hook, priority, chain_type) = chain.kind.hook();
            found.insert(
                chain.name.to_owned(),
                FoundChain {
                    chain_type: chain_type_name(chain_type).to_owned(),
                    hook: Some((hook as u32, priority)),
                    policy: Some(chain.policy as u32),
                    rules: chain.rules.iter().map(RulePlan::expression_kinds).collect(),
                },
            );
        }
        assert!(plan.verify(found.clone()).is_ok());
        let mut accepting = found.clone();
        accepting.get_mut(CHAIN_FORWARD).expect("chain").policy = Some(Policy::Accept as u32);
        assert_eq!(
            plan.verify(accepting)
                .expect_err("wrong policy")
                .to_string(),
            "nftables table \"causeway\" read back does not match the policy: chain forward has policy Some(1), expected 0 (Drop)"
        );
        found.get_mut(CHAIN_FORWARD).expect("chain").rules.pop();

        let error = plan.verify(found).expect_err("one rule short");

        assert_eq!(
            error.to_string(),
            "nftables table \"causeway\" read back does not match the policy: chain forward has 2 rules, expected 3"
        );
    }
}
