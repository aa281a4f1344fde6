//! Instance sizing from the region's own catalogue (DescribeInstanceTypes
//! and DescribeInstanceTypeOfferings), never a hard-coded list. Pure: the
//! catalogue is passed in, so every rule is unit-tested without AWS.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

/// A CPU architecture of instance types and images.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, clap::ValueEnum, Serialize,
)]
pub enum Arch {
    /// 64-bit Arm (Graviton): the default.
    #[default]
    #[value(name = "arm64")]
    #[serde(rename = "arm64")]
    Arm64,
    /// 64-bit x86.
    #[value(name = "x86_64")]
    #[serde(rename = "x86_64")]
    X86_64,
}

impl Arch {
    /// The name AWS uses (`arm64`, `x86_64`).
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::X86_64 => "x86_64",
        }
    }

    /// Parses AWS's spelling; `None` for architectures we do not deploy.
    pub fn from_aws(s: &str) -> Option<Self> {
        match s {
            "arm64" => Some(Arch::Arm64),
            "x86_64" => Some(Arch::X86_64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A sizing tier (`--size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Size {
    /// 2 vCPUs.
    Small,
    /// 4 vCPUs (the default).
    #[default]
    Standard,
    /// More than 16 vCPUs: the reference architecture's "consistent network
    /// performance" tier.
    ConsistentNetwork,
}

impl Size {
    /// The fewest vCPUs an instance type of the tier has.
    pub fn min_vcpus(self) -> u32 {
        match self {
            Size::Small => 2,
            Size::Standard => 4,
            Size::ConsistentNetwork => 17,
        }
    }

    /// The tier's name as on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Standard => "standard",
            Size::ConsistentNetwork => "consistent-network",
        }
    }
}

/// One entry of the catalogue, as DescribeInstanceTypes reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceType {
    /// `c7g.xlarge`.
    pub name: String,
    /// Default vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Supported architectures we deploy.
    pub arches: BTreeSet<Arch>,
    /// `ProcessorInfo.SustainedClockSpeedInGhz`, in MHz (`None` when the
    /// catalogue does not say).
    pub clock_mhz: Option<u32>,
    /// `BurstablePerformanceSupported`.
    pub burstable: bool,
    /// `CurrentGeneration`.
    pub current_generation: bool,
    /// `BareMetal`.
    pub bare_metal: bool,
    /// `NetworkInfo.NetworkPerformance`, e.g. `Up to 12.5 Gigabit`.
    pub network: String,
}

/// Instance types offered per availability zone.
pub type Offerings = BTreeMap<String, BTreeSet<String>>;

/// What the deployment needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Criteria {
    /// Architecture (of the image).
    pub arch: Arch,
    /// Whether burstable (T-family) types are allowed.
    pub allow_burstable: bool,
    /// Tier.
    pub size: Size,
    /// Every AZ an instance goes to.
    pub azs: Vec<String>,
}

/// The chosen type, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Choice {
    /// The instance type.
    pub instance_type: String,
    /// One line explaining the choice.
    pub explanation: String,
}

/// Why no type could be chosen, or a given one was refused. Each names the
/// flag at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizingError {
    /// `--instance-type` is not in the region's catalogue.
    #[error("--instance-type {0}: not an instance type of this region's catalogue")]
    Unknown(String),
    /// `--instance-type` does not run the image's architecture.
    #[error(
        "--instance-type {name} supports {supported}, but the image is {arch} (--arch/--ami); choose a {arch} type"
    )]
    WrongArch {
        /// The type.
        name: String,
        /// What it supports.
        supported: String,
        /// What the image needs.
        arch: Arch,
    },
    /// `--instance-type` is burstable and `--allow-burstable` was not given.
    #[error(
        "--instance-type {0} is burstable (CPU credits, throttled network); pass --allow-burstable to accept it"
    )]
    Burstable(String),
    /// `--instance-type` is not offered in one of the AZs.
    #[error("--instance-type {name} is not offered in availability zone {az}")]
    NotOffered {
        /// The type.
        name: String,
        /// The AZ.
        az: String,
    },
    /// Nothing in the catalogue meets the criteria.
    #[error(
        "no {arch} instance type with at least {min_vcpus} vCPUs (--size {size}){burst} is offered in {azs}; try another --size, --arch or --allow-burstable"
    )]
    NoCandidate {
        /// Architecture.
        arch: Arch,
        /// Tier minimum.
        min_vcpus: u32,
        /// Tier name.
        size: &'static str,
        /// `", non-burstable"` or empty.
        burst: &'static str,
        /// AZs, comma-separated.
        azs: String,
    },
}

/// Picks the instance type for `criteria`: current generation, the
/// architecture, not bare metal, non-burstable unless allowed, offered in
/// every AZ, at least the tier's vCPUs; then the fewest vCPUs, the least
/// memory, `c` over `m` over other families, and the name.
pub fn choose(
    catalogue: &[InstanceType],
    offerings: &Offerings,
    criteria: &Criteria,
) -> Result<Choice, SizingError> {
    let min = criteria.size.min_vcpus();
    let mut candidates: Vec<&InstanceType> = catalogue
        .iter()
        .filter(|t| t.current_generation && !t.bare_metal)
        .filter(|t| t.arches.contains(&criteria.arch))
        .filter(|t| criteria.allow_burstable || !t.burstable)
        .filter(|t| t.vcpus >= min)
        .filter(|t| offered_everywhere(&t.name, offerings, &criteria.azs))
        .collect();
    candidates.sort_by_key(|t| (t.vcpus, t.memory_mib, family_rank(&t.name), t.name.clone()));
    let Some(best) = candidates.first() else {
        return Err(SizingError::NoCandidate {
            arch: criteria.arch,
            min_vcpus: min,
            size: criteria.size.as_str(),
            burst: if criteria.allow_burstable {
                ""
            } else {
                ", non-burstable"
            },
            azs: criteria.azs.join(", "),
        });
    };
    let explanation = format!(
        "{}: fewest vCPUs ({}) meeting --size {} (>= {} vCPU), then least memory ({}), {} family preferred; {}, {}, network {:?}, offered in {}; {} candidate(s)",
        best.name,
        best.vcpus,
        criteria.size.as_str(),
        min,
        memory(best.memory_mib),
        family_label(&best.name),
        criteria.arch,
        if best.burstable {
            "burstable (allowed)"
        } else {
            "non-burstable"
        },
        best.network,
        criteria.azs.join(" and "),
        candidates.len()
    );
    Ok(Choice {
        instance_type: best.name.clone(),
        explanation,
    })
}

/// Checks a type given with `--instance-type` against the catalogue, the
/// image's architecture, burstability and AZ offerings.
pub fn validate(
    name: &str,
    catalogue: &[InstanceType],
    offerings: &Offerings,
    criteria: &Criteria,
) -> Result<Choice, SizingError> {
    let Some(t) = catalogue.iter().find(|t| t.name == name) else {
        return Err(SizingError::Unknown(name.to_owned()));
    };
    if !t.arches.contains(&criteria.arch) {
        let supported: Vec<&str> = t.arches.iter().map(|a| a.as_str()).collect();
        return Err(SizingError::WrongArch {
            name: name.to_owned(),
            supported: if supported.is_empty() {
                "no architecture we deploy".to_owned()
            } else {
                supported.join(", ")
            },
            arch: criteria.arch,
        });
    }
    if t.burstable && !criteria.allow_burstable {
        return Err(SizingError::Burstable(name.to_owned()));
    }
    if let Some(az) = criteria
        .azs
        .iter()
        .find(|az| !offerings.get(*az).is_some_and(|o| o.contains(name)))
    {
        return Err(SizingError::NotOffered {
            name: name.to_owned(),
            az: az.clone(),
        });
    }
    Ok(Choice {
        instance_type: name.to_owned(),
        explanation: format!(
            "{name}: given with --instance-type; {} vCPU, {}, {}, {}, offered in {}",
            t.vcpus,
            memory(t.memory_mib),
            criteria.arch,
            if t.burstable {
                "burstable (allowed)"
            } else {
                "non-burstable"
            },
            criteria.azs.join(" and ")
        ),
    })
}

fn offered_everywhere(name: &str, offerings: &Offerings, azs: &[String]) -> bool {
    azs.iter()
        .all(|az| offerings.get(az).is_some_and(|o| o.contains(name)))
}

/// Compute-optimised families first, then general purpose, then the rest.
fn family_rank(name: &str) -> u8 {
    match name.as_bytes().first() {
        Some(b'c') => 0,
        Some(b'm') => 1,
        _ => 2,
    }
}

fn family_label(name: &str) -> &'static str {
    match family_rank(name) {
        0 => "compute (c)",
        1 => "general-purpose (m)",
        _ => "other",
    }
}

fn memory(mib: u64) -> String {
    if mib.is_multiple_of(1024) {
        format!("{} GiB", mib / 1024)
    } else {
        format!("{mib} MiB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, vcpus: u32, memory_gib: u64, arch: Arch, burstable: bool) -> InstanceType {
        InstanceType {
            name: name.to_owned(),
            vcpus,
            memory_mib: memory_gib * 1024,
            arches: [arch].into_iter().collect(),
            clock_mhz: None,
            burstable,
            current_generation: true,
            bare_metal: false,
            network: "Up to 12.5 Gigabit".to_owned(),
        }
    }

    fn catalogue() -> Vec<InstanceType> {
        let mut metal = t("c7g.metal", 64, 128, Arch::Arm64, false);
        metal.bare_metal = true;
        let mut old = t("a1.xlarge", 4, 8, Arch::Arm64, false);
        old.current_generation = false;
        vec![
            t("t4g.medium", 2, 4, Arch::Arm64, true),
            t("m7g.large", 2, 8, Arch::Arm64, false),
            t("c7g.large", 2, 4, Arch::Arm64, false),
            t("c6g.large", 2, 4, Arch::Arm64, false),
            t("r7g.xlarge", 4, 32, Arch::Arm64, false),
            t("m7g.xlarge", 4, 16, Arch::Arm64, false),
            t("c7g.xlarge", 4, 8, Arch::Arm64, false),
            t("c7i.xlarge", 4, 8, Arch::X86_64, false),
            t("c7g.4xlarge", 16, 32, Arch::Arm64, false),
            t("c7g.8xlarge", 32, 64, Arch::Arm64, false),
            t("m7g.8xlarge", 32, 128, Arch::Arm64, false),
            metal,
            old,
        ]
    }

    fn everywhere(cat: &[InstanceType], azs: &[&str]) -> Offerings {
        azs.iter()
            .map(|az| (az.to_string(), cat.iter().map(|t| t.name.clone()).collect()))
            .collect()
    }

    fn criteria(size: Size) -> Criteria {
        Criteria {
            arch: Arch::Arm64,
            allow_burstable: false,
            size,
            azs: vec!["us-east-1a".into(), "us-east-1b".into()],
        }
    }

    #[test]
    fn tiers_pick_the_fewest_vcpus_then_least_memory_then_c_then_name() {
        let cat = catalogue();
        let off = everywhere(&cat, &["us-east-1a", "us-east-1b"]);
        let pick = |size| choose(&cat, &off, &criteria(size)).expect("a candidate");
        assert_eq!(pick(Size::Small).instance_type, "c6g.large");
        assert_eq!(pick(Size::Standard).instance_type, "c7g.xlarge");
        assert_eq!(pick(Size::ConsistentNetwork).instance_type, "c7g.8xlarge");
        let line = pick(Size::Standard).explanation;
        assert!(line.contains("--size standard"), "{line}");
        assert!(line.contains("non-burstable"), "{line}");
        assert!(!line.contains('\n'), "one line: {line}");
    }

    #[test]
    fn burstable_types_only_with_the_flag() {
        let cat = vec![
            t("t4g.small", 2, 2, Arch::Arm64, true),
            t("m7g.large", 2, 8, Arch::Arm64, false),
        ];
        let off = everywhere(&cat, &["us-east-1a", "us-east-1b"]);
        let mut c = criteria(Size::Small);
        assert_eq!(
            choose(&cat, &off, &c).expect("ok").instance_type,
            "m7g.large"
        );
        c.allow_burstable = true;
        assert_eq!(
            choose(&cat, &off, &c).expect("ok").instance_type,
            "t4g.small"
        );
    }

    #[test]
    fn a_type_missing_in_one_az_is_not_a_candidate() {
        let cat = catalogue();
        let mut off = everywhere(&cat, &["us-east-1a", "us-east-1b"]);
        off.get_mut("us-east-1b").expect("az").remove("c7g.xlarge");
        let c = choose(&cat, &off, &criteria(Size::Standard)).expect("ok");
        assert_eq!(c.instance_type, "m7g.xlarge");
    }

    #[test]
    fn x86_is_chosen_only_when_asked() {
        let cat = catalogue();
        let off = everywhere(&cat, &["us-east-1a", "us-east-1b"]);
        let mut c = criteria(Size::Standard);
        c.arch = Arch::X86_64;
        assert_eq!(
            choose(&cat, &off, &c).expect("ok").instance_type,
            "c7i.xlarge"
        );
        c.size = Size::ConsistentNetwork;
        let err = choose(&cat, &off, &c).expect_err("no x86 of that size");
        assert!(
            err.to_string().contains("--size consistent-network"),
            "{err}"
        );
    }

    #[test]
    fn a_given_type_is_checked_against_every_rule() {
        let cat = catalogue();
        let mut off = everywhere(&cat, &["us-east-1a", "us-east-1b"]);
        let c = criteria(Size::Standard);
        assert_eq!(
            validate("c7g.large", &cat, &off, &c)
                .expect("ok")
                .instance_type,
            "c7g.large"
        );
        assert_eq!(
            validate("x9.huge", &cat, &off, &c),
            Err(SizingError::Unknown("x9.huge".into()))
        );
        assert_eq!(
            validate("t4g.medium", &cat, &off, &c),
            Err(SizingError::Burstable("t4g.medium".into()))
        );
        let err = validate("c7i.xlarge", &cat, &off, &c).expect_err("x86 type, arm image");
        assert!(err.to_string().contains("the image is arm64"), "{err}");
        off.get_mut("us-east-1b").expect("az").remove("c7g.large");
        assert_eq!(
            validate("c7g.large", &cat, &off, &c),
            Err(SizingError::NotOffered {
                name: "c7g.large".into(),
                az: "us-east-1b".into()
            })
        );
    }
}
