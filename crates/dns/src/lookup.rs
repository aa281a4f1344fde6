//! One query of our own and its answer, for `appliance dns query`: the
//! message to send and the reading of what comes back, with hickory-proto
//! and no I/O (the caller picks the id and sends).

use std::str::FromStr;

use hickory_proto::op::{Message, MessageType, OpCode, Query as Question, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use crate::BadAnswer;

/// A question asked by name and type (`A`, `AAAA`, `PTR`, `TXT`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    name: Name,
    record_type: RecordType,
}

/// Why a lookup could not be asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadLookup {
    /// Not a domain name.
    #[error("{name:?}: {reason}; expected a domain name, e.g. router.tailnet.causeway.internal")]
    Name {
        /// As given.
        name: String,
        /// What hickory-proto said.
        reason: String,
    },
    /// Not a record type hickory-proto knows.
    #[error("record type {0:?}: expected one like A, AAAA, PTR, TXT, MX, SRV or CNAME")]
    Type(String),
}

/// What an answer said.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Answer {
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, …
    pub status: String,
    /// The server answered for the zone (AA).
    pub authoritative: bool,
    /// Cut short (TC): ask again over TCP.
    pub truncated: bool,
    /// The answer section, one record per line as `NAME TTL CLASS TYPE DATA`.
    pub records: Vec<String>,
}

impl Lookup {
    /// `name` (relative names are taken as fully qualified) and `record_type`.
    pub fn new(name: &str, record_type: &str) -> Result<Self, BadLookup> {
        let mut parsed = Name::from_utf8(name).map_err(|e| BadLookup::Name {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        parsed.set_fqdn(true);
        let record_type = RecordType::from_str(&record_type.to_ascii_uppercase())
            .map_err(|_| BadLookup::Type(record_type.to_owned()))?;
        Ok(Self {
            name: parsed,
            record_type,
        })
    }

    /// The question, e.g. `router.tailnet.example. IN A`.
    pub fn question(&self) -> String {
        Question::query(self.name.clone(), self.record_type).to_string()
    }

    /// The query to send, with message id `id` and recursion desired.
    pub fn message(&self, id: u16) -> Vec<u8> {
        let mut message = Message::new(id, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Question::query(self.name.clone(), self.record_type));
        // One question of a checked name: encoding cannot fail.
        message.to_vec().unwrap_or_default()
    }

    /// Reads the answer to [`Lookup::message`] with `id`: it must be a
    /// response to this very question.
    pub fn read(&self, id: u16, bytes: &[u8]) -> Result<Answer, BadAnswer> {
        let answer = Message::from_vec(bytes).map_err(|e| BadAnswer::Malformed(e.to_string()))?;
        let asked = Question::query(self.name.clone(), self.record_type);
        let same_question = answer.queries.len() == 1
            && answer.queries[0].name().to_lowercase() == asked.name().to_lowercase()
            && answer.queries[0].query_type() == asked.query_type();
        if answer.metadata.message_type != MessageType::Response
            || answer.metadata.id != id
            || !same_question
        {
            return Err(BadAnswer::Mismatch);
        }
        Ok(Answer {
            status: status_text(answer.metadata.response_code),
            authoritative: answer.metadata.authoritative,
            truncated: answer.metadata.truncation,
            records: answer.answers.iter().map(ToString::to_string).collect(),
        })
    }
}

fn status_text(code: ResponseCode) -> String {
    match code {
        ResponseCode::NoError => "NOERROR".to_owned(),
        ResponseCode::FormErr => "FORMERR".to_owned(),
        ResponseCode::ServFail => "SERVFAIL".to_owned(),
        ResponseCode::NXDomain => "NXDOMAIN".to_owned(),
        ResponseCode::NotImp => "NOTIMP".to_owned(),
        ResponseCode::Refused => "REFUSED".to_owned(),
        other => format!("{other:?}").to_ascii_uppercase(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use causeway_wire::DnsConfig;

    use super::*;
    use crate::{MagicDns, Query, Route, Transport};

    #[test]
    fn a_lookup_asks_and_reads_the_node_resolvers_answer() {
        let lookup = Lookup::new("router.t.example", "a").expect("valid");
        assert_eq!(lookup.question(), "router.t.example. IN A");
        let config = DnsConfig {
            domain: "t.example".into(),
            records: BTreeMap::from([(
                "router.t.example".to_owned(),
                vec!["100.64.0.1".parse().expect("ip")],
            )]),
            split: BTreeMap::new(),
        };
        let visible = BTreeSet::from(["100.64.0.1".parse().expect("ip")]);
        let table = MagicDns::new(&config, &visible).expect("valid");
        let query = Query::parse(&lookup.message(7), Transport::Udp).expect("a query");
        let Route::Answer(bytes) = table.route(&query) else {
            panic!("answered here");
        };
        let answer = lookup.read(7, &bytes).expect("reads");
        assert_eq!(answer.status, "NOERROR");
        assert!(answer.authoritative && !answer.truncated);
        assert_eq!(answer.records, ["router.t.example. 60 IN A 100.64.0.1"]);
        assert_eq!(lookup.read(8, &bytes), Err(BadAnswer::Mismatch));
        let other = Lookup::new("other.t.example", "A").expect("valid");
        assert_eq!(other.read(7, &bytes), Err(BadAnswer::Mismatch));
    }

    #[test]
    fn bad_names_and_types_are_named() {
        let err = Lookup::new("bad..name", "A").expect_err("bad name");
        assert!(err.to_string().starts_with("\"bad..name\": "), "{err}");
        let err = Lookup::new("ok.example", "NOPE").expect_err("bad type");
        assert_eq!(
            err.to_string(),
            "record type \"NOPE\": expected one like A, AAAA, PTR, TXT, MX, SRV or CNAME"
        );
    }
}
