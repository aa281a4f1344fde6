//! Sans-IO coordination logic for a tailnet: address allocation, auth keys,
//! node registration, subnet routes and their primaries, policy
//! (parsed, checked and compiled into per-node packet filters and peer
//! sets: see [`policy`]) and netmaps with deltas.
//!
//! Nothing here reads a clock, draws random numbers or touches a socket or
//! a disk: callers pass `now` and random bytes in, apply the returned
//! [`ChangeSet`] to their storage, and fan a [`PreparedChange`] out to every
//! open [`MapSession`].

pub mod addresses;
pub mod auth_keys;
pub mod netmap;
pub mod policy;
pub mod routes;
mod state;

pub use auth_keys::{
    AuthKey, AuthKeyRefusal, AuthKeySpec, InvalidTag, InvalidUser, NewAuthKey, validate_user,
};
pub use netmap::{DeltaOutcome, MapSession, PreparedChange, apply_delta};
pub use policy::{NodePolicy, Policy, PolicyError, PolicyNode, compile};
pub use state::{
    AdminError, ChangeSet, DEFAULT_ROUTE_HOLD_DOWN, MAX_SPLIT_DNS_RESOLVERS, NodeAccess,
    NodeRecord, PrefixHealth, Presence, RegisterError, Registration, RouterReport, SessionId,
    TailnetInfo, TailnetState,
};

#[cfg(test)]
mod tests;
