//! The node's UDP socket with Linux segmentation offloads: `UDP_SEGMENT`
//! (GSO, Linux 4.18) sends a run of equal-size datagrams to one peer in one
//! `sendmsg`, and `UDP_GRO` (Linux 5.0) hands back a run of datagrams from one
//! sender in one `recvmsg`. Where the kernel refuses either, this falls back
//! to one datagram per system call, so the wire carries the same datagrams.
//!
//! Written on nix's typed control messages rather than `quinn-udp`: quinn-udp
//! always sets `IP_MTU_DISCOVER = IP_PMTUDISC_PROBE`, which stops the kernel
//! from honouring path-MTU ICMP and from fragmenting oversized datagrams, a
//! change to how the tunnel behaves on small-MTU paths; undoing it needs a raw
//! `setsockopt`, and the workspace forbids `unsafe`. This socket keeps the
//! kernel's defaults and only adds `UDP_GRO`.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, getsockopt, recvmsg, sendmsg,
    setsockopt, sockopt,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Most segments the kernel takes in one `UDP_SEGMENT` send
/// (`UDP_MAX_SEGMENTS`, 64 before Linux 6.x raised it).
pub const MAX_SEGMENTS: usize = 64;

/// Largest UDP payload in one IPv4 datagram, and so in one GSO send
/// (65535 − 20-byte IP header − 8-byte UDP header).
pub const MAX_SEND_BYTES: usize = 65_507;

/// Receive buffer: one GRO run is at most one maximal datagram; the spare
/// half keeps a run from another implementation (128 segments) whole.
pub const RECV_BUF_LEN: usize = 2 * 65_536;

/// Datagrams that arrived together from one sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Who sent them.
    pub from: SocketAddr,
    /// Bytes in the buffer: the datagrams laid end to end.
    pub len: usize,
    /// Size of each datagram but possibly the last (`len` without GRO).
    pub stride: usize,
}

/// The node's one UDP socket, with GSO on send and GRO on receive where the
/// kernel has them.
pub struct OffloadSocket {
    socket: UdpSocket,
    gso: bool,
    control: Vec<u8>,
}

impl OffloadSocket {
    /// Turns on GRO and probes GSO; either may be missing, and that is fine.
    pub fn new(socket: UdpSocket) -> Self {
        let gso = getsockopt(&socket, sockopt::UdpGsoSegment).is_ok();
        let gro = setsockopt(&socket, sockopt::UdpGroSegment, &true).is_ok();
        tracing::debug!(gso, gro, "UDP segmentation offloads");
        Self {
            socket,
            gso,
            control: nix::cmsg_space!(i32),
        }
    }

    /// Waits for the next datagram or run of datagrams; `buf` should be
    /// [`RECV_BUF_LEN`] long.
    pub async fn recv(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        let Self {
            socket, control, ..
        } = self;
        socket
            .async_io(Interest::READABLE, || recv_once(socket, control, buf))
            .await
    }

    /// [`OffloadSocket::recv`], or `WouldBlock` if nothing is waiting.
    pub fn try_recv(&mut self, buf: &mut [u8]) -> io::Result<Received> {
        let Self {
            socket, control, ..
        } = self;
        socket.try_io(Interest::READABLE, || recv_once(socket, control, buf))
    }

    /// Sends one datagram.
    pub async fn send_to(&self, payload: &[u8], destination: SocketAddr) {
        if let Err(e) = self.socket.send_to(payload, destination).await {
            tracing::debug!(%destination, error = %e, "UDP send failed");
        }
    }

    /// Sends `payload` as datagrams of `segment_size` bytes (the last may be
    /// shorter) to one destination: one system call with GSO, one per
    /// datagram without.
    pub async fn send_segments(
        &mut self,
        destination: SocketAddr,
        payload: &[u8],
        segment_size: usize,
    ) {
        if !self.gso || payload.len() <= segment_size {
            return self.send_each(destination, payload, segment_size).await;
        }
        let Ok(segment) = u16::try_from(segment_size) else {
            return self.send_each(destination, payload, segment_size).await;
        };
        let address = SockaddrStorage::from(destination);
        let fd = self.socket.as_raw_fd();
        let sent = self
            .socket
            .async_io(Interest::WRITABLE, || {
                sendmsg(
                    fd,
                    &[IoSlice::new(payload)],
                    &[ControlMessage::UdpGsoSegments(&segment)],
                    MsgFlags::empty(),
                    Some(&address),
                )
                .map_err(io::Error::from)
            })
            .await;
        let Err(e) = sent else { return };
        if e.raw_os_error() == Some(Errno::EIO as i32) {
            // The route's device cannot checksum segments (Linux returns EIO
            // for that): stop trying, as wireguard-go and quinn do.
            tracing::debug!(error = %e, "UDP GSO refused; sending one datagram per call");
            self.gso = false;
        } else {
            // EINVAL when a learned path MTU is below the segment size: these
            // datagrams go one by one, so the kernel may fragment them as it
            // did before GSO.
            tracing::trace!(%destination, error = %e, "UDP GSO send failed; resending one by one");
        }
        self.send_each(destination, payload, segment_size).await;
    }

    async fn send_each(&self, destination: SocketAddr, payload: &[u8], segment_size: usize) {
        for datagram in payload.chunks(segment_size.max(1)) {
            self.send_to(datagram, destination).await;
        }
    }
}

/// The datagrams of one receive: `len` bytes cut at `stride`. An empty
/// datagram is still one datagram (it counts as garbage).
pub fn datagrams(buf: &[u8], received: Received) -> impl Iterator<Item = &[u8]> {
    let run = &buf[..received.len];
    let empty = run.is_empty().then_some(run);
    run.chunks(received.stride.max(1)).chain(empty)
}

fn recv_once(socket: &UdpSocket, control: &mut [u8], buf: &mut [u8]) -> io::Result<Received> {
    let mut iov = [IoSliceMut::new(buf)];
    let message = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(control),
        MsgFlags::empty(),
    )?;
    let len = message.bytes;
    let mut stride = len;
    // A truncated control buffer means no GRO size: treat it as one datagram.
    if let Ok(messages) = message.cmsgs() {
        for cmsg in messages {
            if let ControlMessageOwned::UdpGroSegments(size) = cmsg
                && let Ok(size) = usize::try_from(size)
                && size > 0
            {
                stride = size;
            }
        }
    }
    let from = message
        .address
        .as_ref()
        .and_then(to_socket_addr)
        .ok_or_else(|| io::Error::other("datagram without an IP source address"))?;
    Ok(Received { from, len, stride })
}

fn to_socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddrV4::from(*v4).into());
    }
    let v6 = address.as_sockaddr_in6()?;
    let v6 = SocketAddrV6::from(*v6);
    // A dual-stack socket reports IPv4 peers as mapped addresses; peers are
    // known by their plain IPv4 endpoints.
    Some(match v6.ip().to_ipv4_mapped() {
        Some(v4) => SocketAddrV4::new(v4, v6.port()).into(),
        None => v6.into(),
    })
}

/// Encrypted datagrams waiting to leave together: a run of equal-size
/// datagrams to one destination laid end to end in one buffer, as
/// `UDP_SEGMENT` wants them. The core encrypts straight into
/// [`GsoBatch::spare`], so nothing is copied.
pub struct GsoBatch {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    destination: Option<SocketAddr>,
    segment_size: usize,
    segments: usize,
    /// The last datagram was shorter than the others: the run is closed.
    closed: bool,
}

/// A run ready for [`OffloadSocket::send_segments`].
#[derive(Debug, PartialEq, Eq)]
pub struct Run<'a> {
    /// Where to.
    pub destination: SocketAddr,
    /// The datagrams, end to end.
    pub payload: &'a [u8],
    /// Size of each but possibly the last.
    pub segment_size: usize,
}

impl GsoBatch {
    /// An empty batch whose buffer holds two maximal runs.
    pub fn new() -> Self {
        Self {
            buf: vec![0; 2 * MAX_SEND_BYTES],
            start: 0,
            end: 0,
            destination: None,
            segment_size: 0,
            segments: 0,
            closed: false,
        }
    }

    /// Bytes free after the pending run.
    pub fn spare_len(&self) -> usize {
        self.buf.len() - self.end
    }

    /// Where the next datagram goes, and that place's address (to find the
    /// datagram's offset in it).
    pub fn spare(&mut self) -> (usize, &mut [u8]) {
        let spare = &mut self.buf[self.end..];
        (spare.as_ptr() as usize, spare)
    }

    /// Whether a datagram written at `offset` of [`GsoBatch::spare`] can
    /// join the pending run; if not, send [`GsoBatch::pending`] and then
    /// [`GsoBatch::begin`] a new run with it.
    pub fn can_extend(&self, destination: SocketAddr, offset: usize, len: usize) -> bool {
        self.destination == Some(destination)
            && offset == 0
            && !self.closed
            && len <= self.segment_size
            && self.segments < MAX_SEGMENTS
            && self.end + len - self.start <= MAX_SEND_BYTES
    }

    /// Adds a datagram written at the start of [`GsoBatch::spare`] to the
    /// pending run (after [`GsoBatch::can_extend`]).
    pub fn extend(&mut self, len: usize) {
        self.end += len;
        self.segments += 1;
        self.closed = len < self.segment_size;
    }

    /// Starts a new run with the datagram written at `offset` of
    /// [`GsoBatch::spare`]; the pending run must have been sent.
    pub fn begin(&mut self, destination: SocketAddr, offset: usize, len: usize) {
        self.start = self.end + offset;
        self.end = self.start + len;
        self.destination = Some(destination);
        self.segment_size = len;
        self.segments = 1;
        self.closed = false;
    }

    /// The run waiting to be sent, if any.
    pub fn pending(&self) -> Option<Run<'_>> {
        let destination = self.destination?;
        Some(Run {
            destination,
            payload: &self.buf[self.start..self.end],
            segment_size: self.segment_size,
        })
    }

    /// Forgets the pending run (after sending it) and reuses the buffer.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
        self.destination = None;
        self.segments = 0;
        self.closed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    fn write(batch: &mut GsoBatch, byte: u8, len: usize) {
        batch.spare().1[..len].fill(byte);
    }

    #[test]
    fn a_run_is_cut_at_its_stride_and_an_empty_datagram_is_kept() {
        let buf = [1u8, 1, 1, 2, 2, 2, 3];
        let run = Received {
            from: peer(1),
            len: 7,
            stride: 3,
        };
        let empty = Received {
            from: peer(1),
            len: 0,
            stride: 0,
        };

        let cut: Vec<&[u8]> = datagrams(&buf, run).collect();
        let kept: Vec<&[u8]> = datagrams(&buf, empty).collect();

        assert_eq!(cut, [&[1, 1, 1][..], &[2, 2, 2][..], &[3][..]]);
        assert_eq!(kept, [&[0u8; 0][..]]);
    }

    #[test]
    fn equal_datagrams_to_one_peer_form_one_run() {
        let mut batch = GsoBatch::new();
        write(&mut batch, 1, 100);
        batch.begin(peer(1), 0, 100);
        write(&mut batch, 2, 100);
        assert!(batch.can_extend(peer(1), 0, 100));
        batch.extend(100);
        write(&mut batch, 3, 60);
        assert!(batch.can_extend(peer(1), 0, 60));
        batch.extend(60);

        let run = batch.pending().expect("a run is pending");

        assert_eq!(run.destination, peer(1));
        assert_eq!(run.segment_size, 100);
        assert_eq!(run.payload.len(), 260);
        assert_eq!(run.payload[0], 1);
        assert_eq!(run.payload[100], 2);
        assert_eq!(run.payload[259], 3);
    }

    #[test]
    fn a_short_datagram_closes_the_run() {
        let mut batch = GsoBatch::new();
        batch.begin(peer(1), 0, 100);
        batch.extend(60);

        assert!(!batch.can_extend(peer(1), 0, 60));
        assert!(!batch.can_extend(peer(1), 0, 100));
    }

    #[test]
    fn another_peer_larger_datagram_or_offset_needs_a_new_run() {
        let mut batch = GsoBatch::new();
        batch.begin(peer(1), 0, 100);

        assert!(!batch.can_extend(peer(2), 0, 100));
        assert!(!batch.can_extend(peer(1), 0, 101));
        assert!(!batch.can_extend(peer(1), 4, 100));
    }

    #[test]
    fn a_run_stops_at_the_segment_and_byte_limits() {
        let mut batch = GsoBatch::new();
        batch.begin(peer(1), 0, 10);
        for _ in 1..MAX_SEGMENTS {
            assert!(batch.can_extend(peer(1), 0, 10));
            batch.extend(10);
        }
        assert!(!batch.can_extend(peer(1), 0, 10));

        let mut big = GsoBatch::new();
        big.begin(peer(1), 0, 1452);
        while big.can_extend(peer(1), 0, 1452) {
            big.extend(1452);
        }
        let run = big.pending().expect("a run is pending");
        assert_eq!(run.payload.len(), 45 * 1452);
    }

    #[test]
    fn begin_after_sending_starts_where_the_datagram_was_written() {
        let mut batch = GsoBatch::new();
        batch.begin(peer(1), 0, 100);
        write(&mut batch, 7, 148);

        batch.begin(peer(2), 0, 148);

        let run = batch.pending().expect("a run is pending");
        assert_eq!(run.destination, peer(2));
        assert_eq!(run.payload, &[7u8; 148][..]);
        assert_eq!(batch.spare_len(), 2 * MAX_SEND_BYTES - 248);
    }

    #[test]
    fn clear_empties_the_batch() {
        let mut batch = GsoBatch::new();
        batch.begin(peer(1), 0, 100);

        batch.clear();

        assert_eq!(batch.pending(), None);
        assert_eq!(batch.spare_len(), 2 * MAX_SEND_BYTES);
    }
}
