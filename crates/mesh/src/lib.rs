//! The mesh node core, with no I/O and no tokio.
//!
//! [`NetmapState`] folds control's full maps and deltas into the node's
//! current view of the tailnet. [`NodeState`] owns one WireGuard tunnel per
//! peer and moves packets: IP packets from the TUN device become UDP
//! datagrams for a peer's endpoint, and datagrams from peers become IP
//! packets for the TUN device once they pass the source check and the
//! packet filter ([`PacketFilterState`]: rules from control plus connection
//! tracking, so replies to flows the node opened come back). [`ExitNodeState`]
//! picks the exit node a client routes its internet traffic through. [`EndpointDiscoveryState`] works out the addresses the
//! node advertises, including the one control's STUN port sees.
//! [`ControlSessionState`] decides when to register, open the map stream,
//! rotate the node key and retry, keeping the old key until control
//! confirms the new one. [`Via6State`] translates 4via6 on a subnet
//! router: IPv6 to a site's overlapping IPv4 range and back (RFC 7915).
//! The shell
//! (the appliance's data-plane driver) owns the TUN device, the one UDP
//! socket and one timer, and hands in the time.

mod conntrack;
mod discovery;
mod exit_node;
mod filter;
mod netmap;
mod node;
mod packet;
mod route_health;
mod session;
mod tunnel;
mod via6;

pub use conntrack::{DEFAULT_FLOW_CAPACITY, FlowStats};
pub use discovery::{DiscoveryEvent, EndpointDiscoveryState, PROBE_INTERVAL};
pub use exit_node::{
    AutoReason, BadExitNodeChoice, ExitCandidate, ExitNodeChoice, ExitNodeState, ExitSelection,
    MAX_WARM_CANDIDATES, MIN_DWELL, SWITCH_MARGIN, SWITCH_MARGIN_PERCENT, Unusable,
};
pub use filter::{FilterDrop, PacketFilterState};
pub use netmap::{NetmapError, NetmapState};
pub use node::{
    Delivery, Drop, DropCounts, DropReason, NodeState, PeerStats, TICK, Transmit, WARM_KEEPALIVE,
};
pub use packet::{
    BadHeader, Flow, IpHeader, PacketKind, PacketSummary, QuotedPacket, parse_flow, parse_ip_header,
};
pub use route_health::{ProbeSettings, RouteHealthState};
pub use session::{
    ControlSessionState, NodeKeys, RETRY_MAX, RETRY_MIN, RegisterAttempt, SessionCommand,
    SessionFailure, SessionPhase, SessionStatus,
};
pub use via6::{
    DEFAULT_VIA6_FLOW_CAPACITY, Via6ConfigError, Via6Outcome, Via6Refusal, Via6State, Via6Stats,
};
