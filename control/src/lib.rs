//! The coordination server, linked into the appliance as role `control`.
//!
//! [`init`] creates a tailnet in a state directory; [`serve`] runs the
//! node-facing control channel (Noise IK over an HTTP upgrade, see
//! [`causeway_wire`]) and the admin HTTP API; [`admin_cli`] is the
//! `appliance admin …` client of that API. The tailnet logic itself lives in
//! the sans-IO crate [`causeway_tailnet`]; this crate owns the sockets, the
//! clock, the random numbers and the SQLite database.

mod admin_api;
pub mod admin_cli;
mod config;
mod duration;
mod init;
mod node_api;
mod server;
mod store;
mod stun;

pub use config::ControlConfig;
pub use duration::parse_duration;
pub use init::{InitOutput, init};
pub use server::{Listeners, serve, serve_on};
