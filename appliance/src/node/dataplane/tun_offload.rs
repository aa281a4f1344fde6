//! The TUN device with the virtio-net header (`IFF_VNET_HDR`) and TSO/USO
//! offloads, as wireguard-go (2023) and Tailscale use it: the kernel hands
//! us one TCP or UDP super-packet of up to 64 KiB, which tun-rs splits into
//! MTU-size packets, and tun-rs's GRO table coalesces decrypted packets of
//! one flow back into one write. Without offloads (an old kernel, or a
//! device opened elsewhere) the same calls move one packet each.

use std::io;
use std::ops::Range;

use tun_rs::{AsyncDevice, DeviceBuilder, GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// Largest packet the kernel hands over or takes back: one IP super-packet.
const MAX_PACKET: usize = 65_535;

/// Room left before each packet for the virtio-net header tun-rs writes.
const HEADROOM: usize = VIRTIO_NET_HDR_LEN;

/// Opens the TUN device with offloads, or without them if the kernel
/// refuses (`TUNSETOFFLOAD` fails on some sandboxes).
pub fn open(name: &str, mtu: u16) -> io::Result<AsyncDevice> {
    match DeviceBuilder::new()
        .name(name)
        .mtu(mtu)
        .offload(true)
        .build_async()
    {
        Ok(device) => {
            tracing::debug!(
                tso = device.tcp_gso(),
                uso = device.udp_gso(),
                "TUN offloads"
            );
            Ok(device)
        }
        Err(e) => {
            tracing::debug!(error = %e, "TUN offloads refused; one packet per read and write");
            DeviceBuilder::new().name(name).mtu(mtu).build_async()
        }
    }
}

/// Whether a TUN read error means the device is gone (as opposed to one
/// malformed super-packet, which tun-rs reports without an OS error code).
pub fn is_device_error(e: &io::Error) -> bool {
    e.raw_os_error().is_some()
}

/// Buffers for reading: one super-packet, split into up to
/// [`IDEAL_BATCH_SIZE`] packets.
pub struct TunReads {
    raw: Vec<u8>,
    packets: Vec<Vec<u8>>,
    sizes: Vec<usize>,
}

impl TunReads {
    /// Buffers for the largest super-packet. Pages are touched only as
    /// packets fill them.
    pub fn new() -> Self {
        Self {
            raw: vec![0; HEADROOM + MAX_PACKET],
            packets: (0..IDEAL_BATCH_SIZE).map(|_| vec![0; MAX_PACKET]).collect(),
            sizes: vec![0; IDEAL_BATCH_SIZE],
        }
    }

    /// Waits for the next read; returns how many packets it held.
    pub async fn recv(&mut self, tun: &AsyncDevice) -> io::Result<usize> {
        tun.recv_multiple(&mut self.raw, &mut self.packets, &mut self.sizes, 0)
            .await
    }

    /// [`TunReads::recv`], or `WouldBlock` if nothing is waiting.
    pub fn try_recv(&mut self, tun: &AsyncDevice) -> io::Result<usize> {
        tun.try_recv_multiple(&mut self.raw, &mut self.packets, &mut self.sizes, 0)
    }

    /// Packet `i` of the last read.
    pub fn packet(&self, i: usize) -> &[u8] {
        &self.packets[i][..self.sizes[i]]
    }
}

/// Decrypted packets waiting to be written, each behind room for the
/// virtio-net header, with capacity for tun-rs to coalesce a flow into one.
pub struct TunWrites {
    packets: Vec<Vec<u8>>,
    len: usize,
    gro: GROTable,
}

impl TunWrites {
    /// Room for [`IDEAL_BATCH_SIZE`] packets.
    pub fn new() -> Self {
        Self {
            // tun-rs coalesces only into a buffer whose capacity holds the
            // whole super-packet plus twice the header room.
            packets: (0..IDEAL_BATCH_SIZE)
                .map(|_| Vec::with_capacity(MAX_PACKET + 2 * HEADROOM))
                .collect(),
            len: 0,
            gro: GROTable::new(),
        }
    }

    /// No room for another packet: flush first.
    pub fn is_full(&self) -> bool {
        self.len == self.packets.len()
    }

    /// A buffer of `len` bytes to decrypt the next packet into. Must not be
    /// called when [`TunWrites::is_full`].
    pub fn slot(&mut self, len: usize) -> &mut [u8] {
        let buf = &mut self.packets[self.len];
        buf.resize(HEADROOM + len, 0);
        &mut buf[HEADROOM..]
    }

    /// Queues the packet that decryption left at `range` of the last slot.
    pub fn commit(&mut self, range: Range<usize>) {
        let buf = &mut self.packets[self.len];
        if range.start != 0 {
            buf.copy_within(HEADROOM + range.start..HEADROOM + range.end, HEADROOM);
        }
        buf.truncate(HEADROOM + range.len());
        self.len += 1;
    }

    /// Writes every queued packet, coalesced where they are one flow.
    pub async fn flush(&mut self, tun: &AsyncDevice) {
        if self.len == 0 {
            return;
        }
        let queued = &mut self.packets[..self.len];
        if let Err(e) = tun.send_multiple(&mut self.gro, queued, HEADROOM).await {
            tracing::debug!(error = %e, "TUN write failed");
        }
        self.len = 0;
    }
}
