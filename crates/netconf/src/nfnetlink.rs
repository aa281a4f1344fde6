//! The nf_tables side of netfilter's netlink protocol (`NETLINK_NETFILTER`):
//! sending a batch built by nftnl, GET requests and dumps, and decoding the
//! replies. nftnl only serialises, so replies are decoded here by hand, in
//! safe Rust, from the layouts in `linux/netlink.h` and
//! `linux/netfilter/nf_tables.h`.

use std::collections::BTreeSet;
use std::io;

use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

/// Netlink message header length (`struct nlmsghdr`).
const NLMSG_HDRLEN: usize = 16;
/// `struct nfgenmsg`: family, version, resource id.
const NFGENMSG_LEN: usize = 4;
/// Netlink attribute header length (`struct nlattr`).
const NLA_HDRLEN: usize = 4;
/// Attribute type bits; the top two bits are the nested and byte-order flags.
const NLA_TYPE_MASK: u16 = 0x3fff;
/// `NLMSGERR_ATTR_MSG`: the extended-ack error string.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// `NLM_F_CAPPED`: the error reply carries only the request's header.
const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS`: extended-ack attributes follow the error reply.
const NLM_F_ACK_TLVS: u16 = 0x200;

/// Netlink message types and flags, narrowed to the widths they have on the wire.
pub(crate) mod consts {
    pub const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
    pub const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;
    pub const NLM_F_REQUEST: u16 = libc::NLM_F_REQUEST as u16;
    pub const NLM_F_ACK: u16 = libc::NLM_F_ACK as u16;
    pub const NLM_F_DUMP: u16 = libc::NLM_F_DUMP as u16;
    pub const NFNL_SUBSYS_NFTABLES: u16 = libc::NFNL_SUBSYS_NFTABLES as u16;
    pub const NFT_MSG_GETTABLE: u16 = libc::NFT_MSG_GETTABLE as u16;
    pub const NFT_MSG_GETCHAIN: u16 = libc::NFT_MSG_GETCHAIN as u16;
    pub const NFT_MSG_GETRULE: u16 = libc::NFT_MSG_GETRULE as u16;
    pub const NFPROTO_INET: u8 = libc::NFPROTO_INET as u8;
    pub const NFNETLINK_V0: u8 = libc::NFNETLINK_V0 as u8;
}
use consts::*;

/// What went wrong talking to nf_tables; mapped onto `FirewallError` by the caller.
#[derive(Debug)]
pub(crate) enum NfError {
    /// Opening, binding or configuring the socket.
    Socket(io::Error),
    /// `send(2)` failed or sent a short datagram.
    Send(io::Error),
    /// `recv(2)` failed.
    Receive(io::Error),
    /// The kernel answered a message with a negative errno.
    Rejected {
        seq: u32,
        errno: i32,
        message: Option<String>,
    },
    /// A reply did not decode.
    Malformed(String),
    /// Some messages of a batch were never acknowledged.
    Unacknowledged(Vec<u32>),
}

/// One decoded netlink message, borrowing its body from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Message<'a> {
    pub msg_type: u16,
    pub flags: u16,
    pub seq: u32,
    /// Everything after the 16-byte header.
    pub body: &'a [u8],
}

/// A netlink socket to nf_tables in the calling thread's network namespace.
pub(crate) struct NfSocket {
    socket: Socket,
    next_seq: u32,
}

impl NfSocket {
    /// Opens and binds the socket, asking for capped acks with error strings.
    pub fn open() -> Result<Self, NfError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NfError::Socket)?;
        socket.bind_auto().map_err(NfError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NfError::Socket)?;
        socket.set_cap_ack(true).map_err(NfError::Socket)?;
        socket.set_ext_ack(true).map_err(NfError::Socket)?;
        Ok(Self {
            socket,
            // Batches number their messages from 1; requests use a disjoint range.
            next_seq: 0x4000_0000,
        })
    }

    /// Sends a finalised batch as one datagram and checks every acknowledgement.
    ///
    /// nfnetlink processes a batch synchronously inside `send(2)`, so every
    /// reply is already queued when it returns; they are drained without
    /// blocking. Pages are joined first because the kernel wants the batch's
    /// begin and end messages in the same datagram.
    pub fn send_batch(&mut self, batch: &nftnl::FinalizedBatch) -> Result<(), NfError> {
        let bytes: Vec<u8> = batch.iter().flatten().copied().collect();
        self.send(&bytes)?;

        let mut pending: BTreeSet<u32> = batch.sequence_numbers().collect();
        let mut first_error: Option<NfError> = None;
        self.socket
            .set_non_blocking(true)
            .map_err(NfError::Socket)?;
        let drained = self.drain_acks(&mut pending, &mut first_error);
        self.socket
            .set_non_blocking(false)
            .map_err(NfError::Socket)?;
        drained?;

        if let Some(error) = first_error {
            return Err(error);
        }
        if !pending.is_empty() {
            return Err(NfError::Unacknowledged(pending.into_iter().collect()));
        }
        Ok(())
    }

    /// Sends a request whose reply is either one object or an error.
    ///
    /// Returns `Ok(None)` when the kernel answered `ENOENT`.
    pub fn get_one(
        &mut self,
        msg_type: u16,
        family: u8,
        attrs: &[(u16, &[u8])],
    ) -> Result<Option<Vec<u8>>, NfError> {
        let seq = self.take_seq();
        let request = encode_request(msg_type, NLM_F_REQUEST | NLM_F_ACK, seq, family, attrs);
        self.send(&request)?;
        let mut object = None;
        loop {
            let datagram = self.recv()?;
            for message in parse_messages(&datagram)? {
                if message.seq != seq {
                    continue;
                }
                match message.msg_type {
                    NLMSG_ERROR => {
                        let (errno, text) = parse_error(&message)?;
                        return match errno {
                            0 => Ok(object),
                            libc::ENOENT => Ok(None),
                            _ => Err(NfError::Rejected {
                                seq,
                                errno,
                                message: text,
                            }),
                        };
                    }
                    NLMSG_DONE => return Ok(object),
                    _ => object = Some(message.body.to_vec()),
                }
            }
        }
    }

    /// Dumps every object of one type and family, returning each message body.
    pub fn dump(
        &mut self,
        msg_type: u16,
        family: u8,
        attrs: &[(u16, &[u8])],
    ) -> Result<Vec<Vec<u8>>, NfError> {
        let seq = self.take_seq();
        let request = encode_request(msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, family, attrs);
        self.send(&request)?;
        let mut objects = Vec::new();
        loop {
            let datagram = self.recv()?;
            for message in parse_messages(&datagram)? {
                if message.seq != seq {
                    continue;
                }
                match message.msg_type {
                    NLMSG_DONE => return Ok(objects),
                    NLMSG_ERROR => {
                        let (errno, text) = parse_error(&message)?;
                        if errno == 0 {
                            return Ok(objects);
                        }
                        return Err(NfError::Rejected {
                            seq,
                            errno,
                            message: text,
                        });
                    }
                    _ => objects.push(message.body.to_vec()),
                }
            }
        }
    }

    fn drain_acks(
        &self,
        pending: &mut BTreeSet<u32>,
        first_error: &mut Option<NfError>,
    ) -> Result<(), NfError> {
        loop {
            let datagram = match self.socket.recv_from_full() {
                Ok((datagram, _)) => datagram,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(NfError::Receive(e)),
            };
            for message in parse_messages(&datagram)? {
                if message.msg_type != NLMSG_ERROR {
                    continue;
                }
                pending.remove(&message.seq);
                let (errno, text) = parse_error(&message)?;
                if errno != 0 && first_error.is_none() {
                    *first_error = Some(NfError::Rejected {
                        seq: message.seq,
                        errno,
                        message: text,
                    });
                }
            }
        }
    }

    fn take_seq(&mut self) -> u32 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }

    fn send(&self, bytes: &[u8]) -> Result<(), NfError> {
        let sent = self.socket.send(bytes, 0).map_err(NfError::Send)?;
        if sent != bytes.len() {
            return Err(NfError::Send(io::Error::other(format!(
                "sent {sent} of {} bytes",
                bytes.len()
            ))));
        }
        Ok(())
    }

    fn recv(&self) -> Result<Vec<u8>, NfError> {
        self.socket
            .recv_from_full()
            .map(|(datagram, _)| datagram)
            .map_err(NfError::Receive)
    }
}

/// Encodes an nf_tables request: header, `nfgenmsg`, then attributes.
pub(crate) fn encode_request(
    nft_msg: u16,
    flags: u16,
    seq: u32,
    family: u8,
    attrs: &[(u16, &[u8])],
) -> Vec<u8> {
    let mut out = vec![0u8; NLMSG_HDRLEN];
    out.extend_from_slice(&[family, NFNETLINK_V0, 0, 0]);
    for (kind, value) in attrs {
        let len = NLA_HDRLEN + value.len();
        let len16 = u16::try_from(len).unwrap_or(u16::MAX);
        out.extend_from_slice(&len16.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    let total = u32::try_from(out.len()).unwrap_or(u32::MAX);
    let msg_type = (NFNL_SUBSYS_NFTABLES << 8) | nft_msg;
    out[0..4].copy_from_slice(&total.to_ne_bytes());
    out[4..6].copy_from_slice(&msg_type.to_ne_bytes());
    out[6..8].copy_from_slice(&flags.to_ne_bytes());
    out[8..12].copy_from_slice(&seq.to_ne_bytes());
    // Port id 0: the kernel fills in ours.
    out
}

/// Splits one datagram into netlink messages.
pub(crate) fn parse_messages(mut buf: &[u8]) -> Result<Vec<Message<'_>>, NfError> {
    let mut messages = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = read_u32(buf, 0)? as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(NfError::Malformed(format!(
                "netlink message length {len} with {} bytes left",
                buf.len()
            )));
        }
        messages.push(Message {
            msg_type: read_u16(buf, 4)?,
            flags: read_u16(buf, 6)?,
            seq: read_u32(buf, 8)?,
            body: &buf[NLMSG_HDRLEN..len],
        });
        let advance = len.next_multiple_of(4).min(buf.len());
        buf = &buf[advance..];
    }
    Ok(messages)
}

/// Decodes an `NLMSG_ERROR` reply into a positive errno (0 for an ack) and
/// the kernel's extended-ack text, if any.
pub(crate) fn parse_error(message: &Message<'_>) -> Result<(i32, Option<String>), NfError> {
    let code = read_i32(message.body, 0)?;
    let errno = code.checked_neg().unwrap_or(i32::MAX);
    if message.flags & NLM_F_ACK_TLVS == 0 {
        return Ok((errno, None));
    }
    // The error reply echoes the request's header, and its body too unless capped.
    let echoed_len = if message.flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        read_u32(message.body, 4)? as usize
    };
    let tlv_start = (4 + echoed_len).next_multiple_of(4);
    let Some(tlvs) = message.body.get(tlv_start..) else {
        return Ok((errno, None));
    };
    let text = parse_attrs(tlvs)?
        .into_iter()
        .find(|(kind, _)| *kind == NLMSGERR_ATTR_MSG)
        .map(|(_, value)| attr_str(value));
    Ok((errno, text))
}

/// Returns the attributes of an nf_tables object body (after `nfgenmsg`).
pub(crate) fn object_attrs(body: &[u8]) -> Result<Vec<(u16, &[u8])>, NfError> {
    let Some(attrs) = body.get(NFGENMSG_LEN..) else {
        return Err(NfError::Malformed(format!(
            "nf_tables message of {} bytes has no nfgenmsg",
            body.len()
        )));
    };
    parse_attrs(attrs)
}

/// Splits a run of netlink attributes into (type, value) pairs.
pub(crate) fn parse_attrs(mut buf: &[u8]) -> Result<Vec<(u16, &[u8])>, NfError> {
    let mut attrs = Vec::new();
    while buf.len() >= NLA_HDRLEN {
        let len = usize::from(read_u16(buf, 0)?);
        let kind = read_u16(buf, 2)? & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > buf.len() {
            return Err(NfError::Malformed(format!(
                "attribute length {len} with {} bytes left",
                buf.len()
            )));
        }
        attrs.push((kind, &buf[NLA_HDRLEN..len]));
        let advance = len.next_multiple_of(4).min(buf.len());
        buf = &buf[advance..];
    }
    Ok(attrs)
}

/// Decodes a NUL-terminated string attribute, lossily.
pub(crate) fn attr_str(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

/// Encodes a string attribute value with its terminating NUL.
pub(crate) fn str_value(s: &str) -> Vec<u8> {
    let mut value = s.as_bytes().to_vec();
    value.push(0);
    value
}

/// Reads a big-endian u32 attribute (nf_tables sends its integers in network order).
pub(crate) fn attr_be_u32(value: &[u8]) -> Result<u32, NfError> {
    let bytes: [u8; 4] = value
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| NfError::Malformed(format!("{} byte u32 attribute", value.len())))?;
    Ok(u32::from_be_bytes(bytes))
}

fn read_u16(buf: &[u8], at: usize) -> Result<u16, NfError> {
    buf.get(at..at + 2)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes)
        .ok_or_else(|| NfError::Malformed(format!("truncated u16 at offset {at}")))
}

fn read_u32(buf: &[u8], at: usize) -> Result<u32, NfError> {
    buf.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or_else(|| NfError::Malformed(format!("truncated u32 at offset {at}")))
}

fn read_i32(buf: &[u8], at: usize) -> Result<i32, NfError> {
    buf.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
        .ok_or_else(|| NfError::Malformed(format!("truncated i32 at offset {at}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_round_trips_through_the_parser() {
        let name = str_value("causeway");
        let request = encode_request(
            NFT_MSG_GETTABLE,
            NLM_F_REQUEST | NLM_F_ACK,
            7,
            NFPROTO_INET,
            &[(1, &name)],
        );

        let messages = parse_messages(&request).expect("well-formed");

        assert_eq!(request.len(), 16 + 4 + 4 + 12);
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].msg_type, (10 << 8) | NFT_MSG_GETTABLE);
        assert_eq!(messages[0].seq, 7);
        let attrs = object_attrs(messages[0].body).expect("attributes");
        assert_eq!(attrs, vec![(1, &b"causeway\0"[..])]);
        assert_eq!(attr_str(attrs[0].1), "causeway");
    }

    #[test]
    fn error_reply_yields_errno_and_extack_text() {
        // NLMSG_ERROR, capped, with an NLMSGERR_ATTR_MSG TLV.
        let mut body = Vec::new();
        body.extend_from_slice(&(-libc::EINVAL).to_ne_bytes());
        body.extend_from_slice(&[0u8; 16]);
        body.extend_from_slice(&9u16.to_ne_bytes());
        body.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        body.extend_from_slice(b"bad\0\0\0\0\0");
        let message = Message {
            msg_type: NLMSG_ERROR,
            flags: NLM_F_CAPPED | NLM_F_ACK_TLVS,
            seq: 3,
            body: &body,
        };

        let (errno, text) = parse_error(&message).expect("decodes");

        assert_eq!(errno, libc::EINVAL);
        assert_eq!(text.as_deref(), Some("bad"));
    }

    #[test]
    fn truncated_message_is_malformed() {
        let mut buf = vec![0u8; 20];
        buf[0..4].copy_from_slice(&64u32.to_ne_bytes());

        let result = parse_messages(&buf);

        assert!(matches!(result, Err(NfError::Malformed(_))));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(messages) = parse_messages(&bytes) {
                for message in messages {
                    let _ = parse_error(&message);
                    if let Ok(attrs) = object_attrs(message.body) {
                        for (_, value) in attrs {
                            let _ = parse_attrs(value);
                            let _ = attr_be_u32(value);
                        }
                    }
                }
            }
        }
    }
}
