//! Fixtures the tests of every Causeway package share, so each is written
//! (and fixed) once: [`Moto`] (the AWS API, moto in server mode),
//! [`Azurite`] (Azure Blob storage), [`FakeImds`] (EC2's instance metadata
//! service), and free loopback ports.
//!
//! Each server is a child process bound to loopback (or to a network
//! namespace the test created), waited for with a deadline, and killed when
//! its guard is dropped, also when the test panics. A missing program fails
//! the test loudly: nothing here skips.
//!
//! ```no_run
//! use causeway_test_support::{CLIENT_ENV, Moto};
//! let moto = Moto::start(); // a free port, the validation flags on
//! let out = std::process::Command::new("aws")
//!     .args(["--endpoint-url", moto.url(), "s3api", "list-buckets"])
//!     .envs(CLIENT_ENV)
//!     .output()?;
//! assert!(out.status.success());
//! # std::io::Result::Ok(())
//! ```

#![allow(clippy::expect_used, clippy::panic)]

mod azurite;
mod http;
mod imds;
mod moto;
mod ports;
mod server;

pub use self::azurite::{AZURITE_ACCOUNT, AZURITE_ACCOUNT_KEY, Azurite};
pub use self::imds::FakeImds;
pub use self::moto::{
    CLIENT_ENV, Moto, MotoOptions, REGION, SERVER_ENV, TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY,
};
pub use self::ports::{free_port, wait_listening};
