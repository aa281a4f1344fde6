//! Every JSON message type that crosses the control channel, and every admin
//! API body, from arbitrary bytes. Whatever parses must also serialise and parse back to the same
//! value (the wire format is canonical: messages.rs).
#![no_main]

use causeway_wire::admin::{
    AddDeviceRequest, AddedDevice, CreateKeyRequest, CreatedKey, KeyView, NodeView, RouteRequest,
    RouteView, SplitDnsEntry, SplitDnsRequest,
};
use causeway_wire::{ClientHello, ClientMessage, MapResponse, ServerHello, ServerMessage};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T>(data: &[u8])
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(value) = serde_json::from_slice::<T>(data) {
        let json = serde_json::to_vec(&value).expect("a parsed message serialises");
        let again: T = serde_json::from_slice(&json).expect("a serialised message parses");
        assert_eq!(again, value, "round trip changed the message");
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<ClientMessage>(data);
    round_trip::<ServerMessage>(data);
    round_trip::<MapResponse>(data);
    round_trip::<ClientHello>(data);
    round_trip::<ServerHello>(data);
    round_trip::<CreateKeyRequest>(data);
    round_trip::<CreatedKey>(data);
    round_trip::<KeyView>(data);
    round_trip::<NodeView>(data);
    round_trip::<RouteRequest>(data);
    round_trip::<RouteView>(data);
    round_trip::<SplitDnsRequest>(data);
    round_trip::<SplitDnsEntry>(data);
    round_trip::<AddDeviceRequest>(data);
    round_trip::<AddedDevice>(data);
});
