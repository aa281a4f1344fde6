//! Loopback ports: finding a free one, waiting for a listener.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A TCP port free on 127.0.0.1 right now (the kernel's pick). Another
/// process may take it before the caller binds it; the servers here retry
/// on a new port when that happens.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Blocks until something accepts connections on 127.0.0.1:`port`; fails
/// the test, naming `what`, after `deadline`.
pub fn wait_listening(port: u16, what: &str, deadline: Duration) {
    let begun = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            begun.elapsed() < deadline,
            "{what} did not listen on port {port} within {} s",
            deadline.as_secs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_can_be_bound_and_a_listener_is_seen() {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
        wait_listening(port, "the test's listener", Duration::from_secs(5));
        drop(listener);
    }

    #[test]
    #[should_panic(expected = "nothing did not listen on port")]
    fn waiting_for_nobody_fails_at_the_deadline() {
        wait_listening(free_port(), "nothing", Duration::from_millis(200));
    }
}
