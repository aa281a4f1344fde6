//! EC2: the VPC and its route tables, the instance-type catalogue, images,
//! security groups, launch templates, instances, an exit node's egress
//! interface, and control's Elastic IP and state volume, one module each; the
//! filter and tag shapes they share are here.

mod catalogue;
mod images;
mod instances;
mod interfaces;
mod launch_templates;
mod security_groups;
mod stable;
mod vpc;

use std::collections::BTreeMap;

use aws_sdk_ec2::types as ec2t;

pub use self::images::{Image, ImportState, NewImage};
pub use self::instances::{Instance, Launch};
pub use self::interfaces::{NatGateway, NetworkInterface, NewInterface};
pub use self::launch_templates::LaunchTemplate;
pub use self::security_groups::SecurityGroup;
pub use self::stable::{Address, NewVolume, Volume};
pub use self::vpc::{RawSubnet, Vpc};

/// A filter `name` matching any of `values`.
fn filter(name: &str, values: &[&str]) -> ec2t::Filter {
    ec2t::Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| (*v).to_owned()).collect()))
        .build()
}

fn ec2_tags(tags: &[(String, String)]) -> Vec<ec2t::Tag> {
    tags.iter()
        .map(|(k, v)| ec2t::Tag::builder().key(k).value(v).build())
        .collect()
}

/// Tags applied at creation to a resource of `kind`.
fn tag_spec(kind: ec2t::ResourceType, tags: &[(String, String)]) -> ec2t::TagSpecification {
    ec2t::TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(ec2_tags(tags)))
        .build()
}

fn tag_map(tags: &[ec2t::Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
        .collect()
}

fn tag_value(tags: &[ec2t::Tag], key: &str) -> Option<String> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .map(str::to_owned)
}
