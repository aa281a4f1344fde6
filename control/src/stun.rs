//! Control's STUN port: answers Binding requests (RFC 5389) so a node can
//! learn the address its WireGuard socket has as seen from outside, the
//! one endpoint a node behind NAT cannot find on its own interfaces.
//!
//! Anyone can send to this port, and a response is a little larger than
//! the request (32 bytes for 20), so a spoofed source could use us as a
//! small amplifier. Two bounds keep that dull: only well-formed Binding
//! requests of at most [`MAX_MESSAGE_LEN`] bytes are answered, and all
//! answers together are capped at [`ANSWERS_PER_SECOND`]; nothing is
//! allocated per sender.

use std::time::Duration;

use causeway_wire::stun::{MAX_MESSAGE_LEN, answer_binding_request};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;

/// Answers per second, for every sender together. A node asks about every
/// 25 s, so this serves 250,000 nodes with room to spare while bounding
/// what a flood of spoofed requests can make us send (about 320 kB/s).
pub(crate) const ANSWERS_PER_SECOND: u32 = 10_000;

/// Serves `socket` until shutdown.
pub(crate) async fn serve(socket: UdpSocket, mut shutdown: watch::Receiver<bool>) {
    // One byte more than we accept, so an oversized datagram shows as such.
    let mut buf = [0u8; MAX_MESSAGE_LEN + 1];
    let mut budget = Budget::new(ANSWERS_PER_SECOND, Instant::now());
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buf) => received,
            () = crate::server::stopped(&mut shutdown) => return,
        };
        let (len, from) = match received {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from earlier sends surface here; not fatal.
                tracing::debug!(error = %e, "STUN receive failed");
                continue;
            }
        };
        if len > MAX_MESSAGE_LEN || !budget.take(Instant::now()) {
            continue;
        }
        let Some(answer) = answer_binding_request(&buf[..len], from) else {
            continue;
        };
        if let Err(e) = socket.send_to(&answer, from).await {
            tracing::debug!(error = %e, "STUN answer not sent");
        }
    }
}

/// A token bucket refilled once a second.
struct Budget {
    per_second: u32,
    left: u32,
    window_start: Instant,
}

impl Budget {
    fn new(per_second: u32, now: Instant) -> Self {
        Self {
            per_second,
            left: per_second,
            window_start: now,
        }
    }

    /// Whether one more answer fits in the current second.
    fn take(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.left = self.per_second;
        }
        match self.left.checked_sub(1) {
            Some(left) => {
                self.left = left;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_caps_answers_per_second_and_refills() {
        let start = Instant::now();
        let mut budget = Budget::new(3, start);
        let taken: Vec<bool> = (0..5).map(|_| budget.take(start)).collect();
        assert_eq!(taken, [true, true, true, false, false]);
        assert!(!budget.take(start + Duration::from_millis(999)));
        assert!(budget.take(start + Duration::from_secs(1)));
    }

    #[tokio::test]
    async fn a_binding_request_gets_the_senders_address_and_junk_gets_nothing() {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind server");
        let server_addr = server.local_addr().expect("server address");
        let (_stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(server, stopped));
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
        let client_addr = client.local_addr().expect("client address");

        client
            .send_to(b"not stun at all", server_addr)
            .await
            .expect("send junk");
        let request = causeway_wire::stun::binding_request([9; 12]);
        client
            .send_to(&request, server_addr)
            .await
            .expect("send request");
        let mut buf = [0u8; 600];
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("an answer within 5 s")
            .expect("receive");

        // The first datagram back answers the request: junk got nothing.
        assert_eq!(
            causeway_wire::stun::parse_binding_response(&buf[..len]),
            Ok(([9; 12], client_addr))
        );
        task.abort();
    }
}
