//! The region's instance-type catalogue and where each type is offered.

use std::collections::BTreeSet;

use aws_sdk_ec2::types as ec2t;

use super::super::Aws;
use super::super::error::{AwsResult, Sent, code, fail};
use super::filter;
use crate::aws::sizing::{Arch, InstanceType, Offerings};

impl Aws {
    /// Instance types supporting `arch` (all when `None`), or only `only`
    /// (none when the region does not know it).
    pub async fn catalogue(
        &self,
        arch: Option<Arch>,
        only: Option<&str>,
    ) -> AwsResult<Vec<InstanceType>> {
        let mut req = self.ec2.describe_instance_types();
        if let Some(a) = arch {
            req = req.filters(filter(
                "processor-info.supported-architecture",
                &[a.as_str()],
            ));
        }
        if let Some(t) = only {
            req = req.instance_types(ec2t::InstanceType::from(t));
        }
        let pages = req.into_paginator().send().collect::<Vec<_>>().await;
        let mut out = Vec::new();
        for page in pages {
            let page = match page {
                Ok(p) => p,
                Err(e) if only.is_some() && code(&e) == Some("InvalidInstanceType") => {
                    return Ok(Vec::new());
                }
                Err(e) => return Err(fail("reading the instance-type catalogue", &self.region, e)),
            };
            out.extend(page.instance_types().iter().filter_map(instance_type));
        }
        Ok(out)
    }

    /// Instance types offered in each of `azs`.
    pub async fn offerings(&self, azs: &[String]) -> AwsResult<Offerings> {
        let mut out: Offerings = azs.iter().map(|az| (az.clone(), BTreeSet::new())).collect();
        let az_refs: Vec<&str> = azs.iter().map(String::as_str).collect();
        let pages = self
            .ec2
            .describe_instance_type_offerings()
            .location_type(ec2t::LocationType::AvailabilityZone)
            .filters(filter("location", &az_refs))
            .into_paginator()
            .send()
            .collect::<Vec<_>>()
            .await;
        for page in pages {
            let page = page.or_fail("reading instance-type offerings in", azs.join(","))?;
            for o in page.instance_type_offerings() {
                if let (Some(az), Some(t)) = (o.location(), o.instance_type())
                    && let Some(set) = out.get_mut(az)
                {
                    set.insert(t.as_str().to_owned());
                }
            }
        }
        Ok(out)
    }
}

fn instance_type(t: &ec2t::InstanceTypeInfo) -> Option<InstanceType> {
    let name = t.instance_type()?.as_str().to_owned();
    let processor = t.processor_info();
    Some(InstanceType {
        name,
        vcpus: t
            .v_cpu_info()
            .and_then(|v| v.default_v_cpus())
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0),
        memory_mib: t
            .memory_info()
            .and_then(|m| m.size_in_mib())
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0),
        arches: processor
            .map(|p| {
                p.supported_architectures()
                    .iter()
                    .filter_map(|a| Arch::from_aws(a.as_str()))
                    .collect()
            })
            .unwrap_or_default(),
        clock_mhz: processor
            .and_then(|p| p.sustained_clock_speed_in_ghz())
            .and_then(ghz_to_mhz),
        burstable: t.burstable_performance_supported().unwrap_or(false),
        current_generation: t.current_generation().unwrap_or(false),
        bare_metal: t.bare_metal().unwrap_or(false),
        network: t
            .network_info()
            .and_then(|n| n.network_performance())
            .unwrap_or("unknown")
            .to_owned(),
    })
}

/// `2.6` GHz as `2600` MHz; `None` for a value that is no clock speed.
fn ghz_to_mhz(ghz: f64) -> Option<u32> {
    let mhz = (ghz * 1000.0).round();
    // The range check makes the cast exact: no truncation, no sign loss.
    (mhz.is_finite() && (1.0..=100_000.0).contains(&mhz)).then_some(mhz as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_speeds_become_whole_megahertz() {
        assert_eq!(ghz_to_mhz(2.6), Some(2600));
        assert_eq!(ghz_to_mhz(3.45), Some(3450));
        assert_eq!(ghz_to_mhz(0.0), None);
        assert_eq!(ghz_to_mhz(f64::NAN), None);
        assert_eq!(ghz_to_mhz(-1.0), None);
    }
}
