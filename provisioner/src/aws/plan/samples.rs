//! Made-up observations and helpers for the planners' tests.

use std::collections::BTreeMap;

use super::{Action, Planned};
use crate::aws::api::Instance;
use crate::aws::network::{Exposure, Subnet};
use crate::aws::report::Change;
use crate::aws::spec;

/// The deployment the samples belong to.
pub const DEP: &str = "prod";

/// The tags of a resource of [`DEP`].
pub fn ours() -> BTreeMap<String, String> {
    BTreeMap::from([(spec::TAG_DEPLOYMENT.to_owned(), DEP.to_owned())])
}

/// The planned actions, for comparing.
pub fn actions(p: &Planned) -> Vec<&Action> {
    p.actions.iter().collect()
}

/// Each item's kind and change, for comparing.
pub fn changes(p: &Planned) -> Vec<(&str, Change)> {
    p.items.iter().map(|i| (i.kind, i.change)).collect()
}

/// A public subnet.
pub fn subnet(id: &str, az: &str) -> Subnet {
    Subnet {
        id: id.into(),
        az: az.into(),
        cidr: "10.0.1.0/24".into(),
        free_ips: 250,
        exposure: Exposure::Public,
    }
}

/// A running instance launched from template `version`.
pub fn instance(name: &str, id: &str, version: Option<i64>) -> Instance {
    Instance {
        id: id.into(),
        name: name.into(),
        role: "subnet-router".into(),
        state: "running".into(),
        az: "us-east-1a".into(),
        subnet: "subnet-a".into(),
        vpc: "vpc-1".into(),
        instance_type: "c8g.xlarge".into(),
        eni: format!("eni-{id}"),
        private_ip: "10.0.1.10".into(),
        public_ip: None,
        template_version: version,
        hostname: "ip-10-0-1-10".into(),
        source_dest_check: true,
    }
}
