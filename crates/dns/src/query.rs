//! [`Query`]: a client's query, checked before it is forwarded, and the
//! check of the upstream's answer before it is relayed. All parsing is
//! hickory-proto's.

use hickory_proto::op::{Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::Transport;

/// Longest query accepted, in bytes. One question is at most 271 bytes
/// (a 255-byte name, type, class, the 12-byte header); the rest leaves room
/// for an EDNS(0) OPT record with a cookie (RFC 7873).
pub const MAX_QUERY_LEN: usize = 512;

/// Largest UDP answer asked of an upstream resolver: the EDNS buffer size
/// DNS Flag Day 2020 settled on, which avoids IP fragmentation on almost
/// every path. A client that offers more is forwarded with this.
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// Smallest UDP payload every client accepts (RFC 1035 §4.2.1).
const MIN_UDP_PAYLOAD: u16 = 512;

/// A checked query: a standard query with exactly one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    message: Message,
    /// What is sent upstream.
    wire: Vec<u8>,
    /// The largest UDP answer the client accepts.
    udp_limit: u16,
    transport: Transport,
}

/// Why a query was not forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadQuery {
    /// Longer than [`MAX_QUERY_LEN`].
    #[error("query of {len} bytes: expected at most {MAX_QUERY_LEN}")]
    TooLong {
        /// Its length (for UDP, at least this).
        len: usize,
    },
    /// hickory-proto could not decode it.
    #[error("query does not decode: {0}")]
    Malformed(String),
    /// A response (QR set): never answered, so that two servers cannot be
    /// made to answer each other forever.
    #[error("a response, expected a query")]
    NotAQuery,
    /// An opcode other than QUERY (NOTIFY, UPDATE, ...).
    #[error("opcode {0:?}: expected a standard query")]
    NotStandardQuery(OpCode),
    /// Not exactly one question.
    #[error("{0} questions: expected exactly one")]
    Questions(usize),
}

/// Why an upstream's answer was not relayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAnswer {
    /// hickory-proto could not decode it.
    #[error("answer does not decode: {0}")]
    Malformed(String),
    /// Not a response, or for another id or question: a stray or forged
    /// datagram, or an answer to an earlier query.
    #[error("answer does not match the query (id, question or QR)")]
    Mismatch,
}

impl Query {
    /// Checks a query that arrived over `transport`.
    pub fn parse(bytes: &[u8], transport: Transport) -> Result<Self, BadQuery> {
        if bytes.len() > MAX_QUERY_LEN {
            return Err(BadQuery::TooLong { len: bytes.len() });
        }
        let message = Message::from_vec(bytes).map_err(|e| BadQuery::Malformed(e.to_string()))?;
        if message.message_type != MessageType::Query {
            return Err(BadQuery::NotAQuery);
        }
        if message.op_code != OpCode::Query {
            return Err(BadQuery::NotStandardQuery(message.op_code));
        }
        if message.queries.len() != 1 {
            return Err(BadQuery::Questions(message.queries.len()));
        }
        let offered = message.edns.as_ref().map(|e| e.max_payload());
        let udp_limit = offered.map_or(MIN_UDP_PAYLOAD, |p| {
            p.clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD)
        });
        let wire = match (transport, offered) {
            // Ask upstream for no more than we relay in one datagram.
            (Transport::Udp, Some(p)) if p > MAX_UDP_PAYLOAD => {
                let mut clamped = message.clone();
                if let Some(edns) = clamped.edns.as_mut() {
                    edns.set_max_payload(MAX_UDP_PAYLOAD);
                }
                clamped
                    .to_vec()
                    .map_err(|e| BadQuery::Malformed(e.to_string()))?
            }
            _ => bytes.to_vec(),
        };
        Ok(Self {
            message,
            wire,
            udp_limit,
            transport,
        })
    }

    /// The decoded query.
    pub(crate) fn message(&self) -> &Message {
        &self.message
    }

    /// The client's message id.
    pub fn id(&self) -> u16 {
        self.message.id
    }

    /// The question, e.g. `example.com. IN A` (for logs at DEBUG).
    pub fn question(&self) -> String {
        self.message
            .queries
            .first()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    /// The bytes to send upstream.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// Checks an upstream's answer and returns the bytes to relay: the
    /// answer itself, or for a UDP client that accepts less, the answer
    /// cut to its header and question with TC set (RFC 1035 §4.2.1), so the
    /// client asks again over TCP.
    pub fn check_answer(&self, bytes: &[u8]) -> Result<Vec<u8>, BadAnswer> {
        let answer = Message::from_vec(bytes).map_err(|e| BadAnswer::Malformed(e.to_string()))?;
        if answer.message_type != MessageType::Response
            || answer.id != self.message.id
            || answer.queries != self.message.queries
        {
            return Err(BadAnswer::Mismatch);
        }
        if self.transport == Transport::Udp && bytes.len() > usize::from(self.udp_limit) {
            return answer
                .truncate()
                .to_vec()
                .map_err(|e| BadAnswer::Malformed(e.to_string()));
        }
        Ok(bytes.to_vec())
    }

    /// How the query arrived (and so how it is forwarded).
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// SERVFAIL: no upstream resolver answered.
    pub fn server_failure(&self) -> Vec<u8> {
        self.failure(ResponseCode::ServFail)
    }

    /// REFUSED: the client has too many queries in flight.
    pub fn refused(&self) -> Vec<u8> {
        self.failure(ResponseCode::Refused)
    }

    fn failure(&self, code: ResponseCode) -> Vec<u8> {
        let mut answer = Message::error_msg(self.message.id, OpCode::Query, code);
        answer.metadata.recursion_desired = self.message.recursion_desired;
        answer.metadata.recursion_available = true;
        answer.add_queries(self.message.queries.iter().cloned());
        // Only a header and one question of at most 271 bytes: encoding
        // cannot fail, but an empty answer is the safe fallback.
        answer.to_vec().unwrap_or_default()
    }
}

impl BadQuery {
    /// The error answer for a bad query, when one is due: FORMERR for a
    /// query that does not decode or has other than one question, NOTIMP
    /// for another opcode. Nothing for a response or for bytes without a
    /// readable header (there is nobody to answer).
    pub fn answer(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let code = match self {
            Self::NotAQuery => return None,
            Self::TooLong { .. } | Self::Malformed(_) | Self::Questions(_) => ResponseCode::FormErr,
            Self::NotStandardQuery(_) => ResponseCode::NotImp,
        };
        let header = Header::read(&mut BinDecoder::new(bytes)).ok()?;
        if header.metadata.message_type != MessageType::Query {
            return None;
        }
        Message::error_msg(header.metadata.id, header.metadata.op_code, code)
            .to_vec()
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::op::{Edns, Query as Question};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    use proptest::prelude::*;

    use super::*;

    fn question(name: &str) -> Question {
        Question::query(Name::from_str(name).expect("a name"), RecordType::A)
    }

    fn query_message(id: u16, name: &str, payload: Option<u16>) -> Message {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(question(name));
        if let Some(p) = payload {
            let mut edns = Edns::new();
            edns.set_max_payload(p);
            m.set_edns(edns);
        }
        m
    }

    fn bytes(m: &Message) -> Vec<u8> {
        m.to_vec().expect("encodes")
    }

    fn answer_to(query: &Message, addresses: usize) -> Message {
        let mut a = Message::response(query.id, OpCode::Query);
        a.add_queries(query.queries.iter().cloned());
        let name = query.queries[0].name().clone();
        for i in 0..addresses {
            let ip = std::net::Ipv4Addr::from(0xcb00_7100 + u32::try_from(i).expect("small"));
            a.add_answer(Record::from_rdata(name.clone(), 60, RData::A(A(ip))));
        }
        a
    }

    #[test]
    fn a_standard_query_is_forwarded_as_it_came() {
        let m = query_message(7, "probe.example.", None);

        let q = Query::parse(&bytes(&m), Transport::Udp).expect("a good query");

        assert_eq!(q.id(), 7);
        assert_eq!(q.wire(), bytes(&m));
        assert_eq!(q.question(), "probe.example. IN A");
    }

    #[test]
    fn bad_queries_are_named_and_answered_only_when_due() {
        let mut notify = query_message(1, "a.example.", None);
        notify.metadata.op_code = OpCode::Notify;
        let mut two = query_message(2, "a.example.", None);
        two.add_query(question("b.example."));
        let mut none = query_message(3, "a.example.", None);
        none.queries.clear();
        let response = answer_to(&query_message(4, "a.example.", None), 1);

        let cases = [
            (bytes(&notify), BadQuery::NotStandardQuery(OpCode::Notify)),
            (bytes(&two), BadQuery::Questions(2)),
            (bytes(&none), BadQuery::Questions(0)),
            (bytes(&response), BadQuery::NotAQuery),
            (vec![0; MAX_QUERY_LEN + 1], BadQuery::TooLong { len: 513 }),
        ];
        for (wire, want) in cases {
            assert_eq!(Query::parse(&wire, Transport::Udp), Err(want));
        }
        let formerr = BadQuery::Questions(2)
            .answer(&bytes(&two))
            .expect("a query with a header gets FORMERR");
        let formerr = Message::from_vec(&formerr).expect("decodes");
        assert_eq!(formerr.id, 2);
        assert_eq!(formerr.response_code, ResponseCode::FormErr);
        let notimp = BadQuery::NotStandardQuery(OpCode::Notify)
            .answer(&bytes(&notify))
            .expect("NOTIMP");
        assert_eq!(
            Message::from_vec(&notimp).expect("decodes").response_code,
            ResponseCode::NotImp
        );
        assert_eq!(BadQuery::NotAQuery.answer(&bytes(&response)), None);
        assert_eq!(BadQuery::Malformed("x".into()).answer(&[1, 2, 3]), None);
        assert!(matches!(
            Query::parse(&[1, 2, 3], Transport::Udp),
            Err(BadQuery::Malformed(_))
        ));
    }

    #[test]
    fn only_the_matching_answer_is_relayed() {
        let m = query_message(9, "probe.example.", None);
        let q = Query::parse(&bytes(&m), Transport::Udp).expect("good");
        let good = answer_to(&m, 1);
        let other_id = answer_to(&query_message(10, "probe.example.", None), 1);
        let other_name = answer_to(&query_message(9, "other.example.", None), 1);

        assert_eq!(q.check_answer(&bytes(&good)), Ok(bytes(&good)));
        assert_eq!(q.check_answer(&bytes(&other_id)), Err(BadAnswer::Mismatch));
        assert_eq!(
            q.check_answer(&bytes(&other_name)),
            Err(BadAnswer::Mismatch)
        );
        assert_eq!(q.check_answer(&bytes(&m)), Err(BadAnswer::Mismatch));
    }

    #[test]
    fn a_udp_answer_larger_than_the_client_takes_is_truncated_for_a_tcp_retry() {
        let m = query_message(5, "big.example.", None);
        let big = answer_to(&m, 40);
        assert!(bytes(&big).len() > 512);

        let over_udp = Query::parse(&bytes(&m), Transport::Udp).expect("good");
        let relayed = over_udp.check_answer(&bytes(&big)).expect("relayed");
        let relayed = Message::from_vec(&relayed).expect("decodes");
        assert!(relayed.truncation);
        assert!(relayed.answers.is_empty());
        assert_eq!(relayed.id, 5);
        assert_eq!(relayed.queries, m.queries);

        let over_tcp = Query::parse(&bytes(&m), Transport::Tcp).expect("good");
        assert_eq!(over_tcp.check_answer(&bytes(&big)), Ok(bytes(&big)));
    }

    #[test]
    fn a_large_edns_buffer_is_clamped_before_forwarding_over_udp() {
        let m = query_message(6, "probe.example.", Some(4096));

        let q = Query::parse(&bytes(&m), Transport::Udp).expect("good");

        let sent = Message::from_vec(q.wire()).expect("decodes");
        assert_eq!(
            sent.edns.as_ref().map(Edns::max_payload),
            Some(MAX_UDP_PAYLOAD)
        );
        assert_eq!(sent.queries, m.queries);
        let small = query_message(6, "probe.example.", Some(1200));
        let q = Query::parse(&bytes(&small), Transport::Udp).expect("good");
        assert_eq!(q.wire(), bytes(&small));
    }

    #[test]
    fn a_failure_answer_carries_the_id_question_and_code() {
        let m = query_message(11, "probe.example.", None);
        let q = Query::parse(&bytes(&m), Transport::Tcp).expect("good");

        let failure = Message::from_vec(&q.server_failure()).expect("decodes");

        assert_eq!(failure.id, 11);
        assert_eq!(failure.message_type, MessageType::Response);
        assert_eq!(failure.response_code, ResponseCode::ServFail);
        assert_eq!(failure.queries, m.queries);
        assert!(failure.recursion_desired);
        let refused = Message::from_vec(&q.refused()).expect("decodes");
        assert_eq!(refused.response_code, ResponseCode::Refused);
        assert_eq!(q.transport(), Transport::Tcp);
    }

    proptest! {
        /// Whatever arrives, checking never panics, never accepts more
        /// than the limit, and anything accepted is a one-question query.
        #[test]
        fn arbitrary_bytes_are_checked_without_panicking(
            wire in proptest::collection::vec(any::<u8>(), 0..700),
            tcp in any::<bool>(),
        ) {
            let transport = if tcp { Transport::Tcp } else { Transport::Udp };
            match Query::parse(&wire, transport) {
                Ok(q) => {
                    prop_assert!(wire.len() <= MAX_QUERY_LEN);
                    let sent = Message::from_vec(q.wire()).expect("forwarded bytes decode");
                    prop_assert_eq!(sent.queries.len(), 1);
                    prop_assert_eq!(sent.message_type, MessageType::Query);
                }
                Err(bad) => {
                    if let Some(answer) = bad.answer(&wire) {
                        let m = Message::from_vec(&answer).expect("error answers decode");
                        prop_assert_eq!(m.message_type, MessageType::Response);
                    }
                }
            }
        }

        /// An answer is relayed only for the query's own id.
        #[test]
        fn answers_for_another_id_are_refused(id in any::<u16>(), other in any::<u16>()) {
            let m = query_message(id, "probe.example.", None);
            let q = Query::parse(&bytes(&m), Transport::Udp).expect("good");
            let answer = answer_to(&query_message(other, "probe.example.", None), 1);
            prop_assert_eq!(q.check_answer(&bytes(&answer)).is_ok(), id == other);
        }
    }
}
