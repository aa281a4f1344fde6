//! Instance sizing from the region's own catalogue (DescribeInstanceTypes
//! and DescribeInstanceTypeOfferings), never a hard-coded list. Pure: the
//! catalogue is passed in, so every rule is unit-tested without AWS.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// A CPU architecture of instance types and images.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    clap::ValueEnum,
    Serialize,
    Deserialize,
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
/// every AZ, at least the tier's vCPUs. Then the fewest vCPUs (the tier),
/// and within it the highest sustained clock and the newest generation
/// before the least memory: a router's packet path runs on few cores, so a
/// faster core buys more throughput than another core or more memory.
/// Then `c` over `m` over other families, and the name.
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
    candidates.sort_by_key(|t| preference(t));
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
        "{}: fewest vCPUs ({}) meeting --size {} (>= {} vCPU), then the highest sustained clock ({}; a router's clock matters more than its core count) and the newest generation ({}), then least memory ({}), {} family preferred; {}, {}, network {:?}, offered in {}; {} candidate(s)",
        best.name,
        best.vcpus,
        criteria.size.as_str(),
        min,
        clock(best.clock_mhz),
        generation(&best.name).map_or_else(|| "unknown".to_owned(), |g| g.to_string()),
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

/// The order of preference among candidates: smallest first.
fn preference(t: &InstanceType) -> (u32, Reverse<u32>, Reverse<u32>, u64, u8, String) {
    (
        t.vcpus,
        // Unknown clock or generation ranks last.
        Reverse(t.clock_mhz.unwrap_or(0)),
        Reverse(generation(&t.name).unwrap_or(0)),
        t.memory_mib,
        family_rank(&t.name),
        t.name.clone(),
    )
}

/// The generation in an instance type's name: the number after the family
/// letters (`c7gn.xlarge` → 7, `m5zn.large` → 5); `None` when the name has
/// none (`u-6tb1.metal`).
pub fn generation(name: &str) -> Option<u32> {
    let family = name.split('.').next()?;
    let digits: String = family
        .trim_start_matches(|c: char| c.is_ascii_lowercase())
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
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
            "{name}: given with --instance-type; {} vCPU, sustained clock {}, {}, {}, {}, offered in {}",
            t.vcpus,
            clock(t.clock_mhz),
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

/// `2.8 GHz`, `3.45 GHz`; `unknown` when the catalogue does not say.
fn clock(mhz: Option<u32>) -> String {
    let Some(mhz) = mhz else {
        return "unknown".to_owned();
    };
    let text = format!("{}.{:03}", mhz / 1000, mhz % 1000);
    format!("{} GHz", text.trim_end_matches('0').trim_end_matches('.'))
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

    /// A type with the clock DescribeInstanceTypes reports for it.
    fn clocked(name: &str, vcpus: u32, memory_gib: u64, arch: Arch, ghz_x10: u32) -> InstanceType {
        InstanceType {
            clock_mhz: Some(ghz_x10 * 100),
            ..t(name, vcpus, memory_gib, arch, false)
        }
    }

    /// Real 4-vCPU entries of the us-east-1 catalogue (clock, memory and
    /// generation as DescribeInstanceTypes reports them).
    fn four_vcpu_catalogue() -> Vec<InstanceType> {
        vec![
            clocked("c6g.xlarge", 4, 8, Arch::Arm64, 25),
            clocked("c7g.xlarge", 4, 8, Arch::Arm64, 26),
            clocked("c7gn.xlarge", 4, 8, Arch::Arm64, 26),
            clocked("m7g.xlarge", 4, 16, Arch::Arm64, 26),
            clocked("r8g.xlarge", 4, 32, Arch::Arm64, 28),
            clocked("m8g.xlarge", 4, 16, Arch::Arm64, 28),
            clocked("c8gn.xlarge", 4, 8, Arch::Arm64, 28),
            clocked("c8g.xlarge", 4, 8, Arch::Arm64, 28),
            clocked("c8g.2xlarge", 8, 16, Arch::Arm64, 28),
            clocked("c7i.xlarge", 4, 8, Arch::X86_64, 32),
            clocked("c6i.xlarge", 4, 8, Arch::X86_64, 35),
            clocked("c6in.xlarge", 4, 8, Arch::X86_64, 35),
            clocked("c7a.xlarge", 4, 8, Arch::X86_64, 37),
            clocked("m7a.xlarge", 4, 16, Arch::X86_64, 37),
        ]
    }

    #[test]
    fn within_a_tier_the_clock_then_the_generation_beat_memory() {
        let cat = four_vcpu_catalogue();
        let off = everywhere(&cat, &["us-east-1a", "us-east-1b"]);
        let c = criteria(Size::Standard);

        let mut ranked: Vec<&InstanceType> = cat
            .iter()
            .filter(|t| t.arches.contains(&Arch::Arm64) && t.vcpus == 4)
            .collect();
        ranked.sort_by_key(|t| preference(t));
        let names: Vec<&str> = ranked.iter().map(|t| t.name.as_str()).collect();

        // 2.8 GHz Graviton4 first, by memory then family then name; the
        // 2.6 GHz Graviton3 next, the 2.5 GHz Graviton2 last, even though
        // r8g and m8g have far more memory than c7g.
        assert_eq!(
            names,
            [
                "c8g.xlarge",
                "c8gn.xlarge",
                "m8g.xlarge",
                "r8g.xlarge",
                "c7g.xlarge",
                "c7gn.xlarge",
                "m7g.xlarge",
                "c6g.xlarge"
            ]
        );
        let choice = choose(&cat, &off, &c).expect("a candidate");
        assert_eq!(choice.instance_type, "c8g.xlarge");
        assert!(
            choice
                .explanation
                .contains("the highest sustained clock (2.8 GHz; a router's clock matters more than its core count) and the newest generation (8)"),
            "{}",
            choice.explanation
        );

        let mut x86 = c.clone();
        x86.arch = Arch::X86_64;
        // The older c6i (3.5 GHz) beats the newer c7i (3.2 GHz): clock first.
        let mut without_amd = cat.clone();
        without_amd.retain(|t| !t.name.ends_with("a.xlarge"));
        assert_eq!(
            choose(&without_amd, &off, &x86).expect("ok").instance_type,
            "c6i.xlarge"
        );
        assert_eq!(
            choose(&cat, &off, &x86).expect("ok").instance_type,
            "c7a.xlarge"
        );
    }

    #[test]
    fn the_same_clock_prefers_the_newer_generation() {
        let cat = vec![
            clocked("c6i.xlarge", 4, 8, Arch::X86_64, 35),
            clocked("c5.xlarge", 4, 8, Arch::X86_64, 35),
        ];
        let off = everywhere(&cat, &["us-east-1a", "us-east-1b"]);
        let mut c = criteria(Size::Standard);
        c.arch = Arch::X86_64;
        assert_eq!(
            choose(&cat, &off, &c).expect("ok").instance_type,
            "c6i.xlarge"
        );
    }

    #[test]
    fn an_unknown_clock_ranks_after_any_known_one() {
        let cat = vec![
            t("c9g.xlarge", 4, 8, Arch::Arm64, false),
            clocked("c6g.xlarge", 4, 8, Arch::Arm64, 25),
        ];
        let off = everywhere(&cat, &["us-east-1a", "us-east-1b"]);
        let choice = choose(&cat, &off, &criteria(Size::Standard)).expect("ok");
        assert_eq!(choice.instance_type, "c6g.xlarge");
    }

    #[test]
    fn generations_and_clocks_read_from_the_catalogue() {
        assert_eq!(generation("c7gn.xlarge"), Some(7));
        assert_eq!(generation("m5zn.large"), Some(5));
        assert_eq!(generation("x2iedn.xlarge"), Some(2));
        assert_eq!(generation("u-6tb1.metal"), None);
        assert_eq!(clock(Some(2800)), "2.8 GHz");
        assert_eq!(clock(Some(3450)), "3.45 GHz");
        assert_eq!(clock(Some(3000)), "3 GHz");
        assert_eq!(clock(None), "unknown");
    }

    #[test]
    fn tiers_pick_the_fewest_vcpus_then_the_newest_then_least_memory_then_c() {
        let cat = catalogue();
        let off = everywhere(&cat, &["us-east-1a", "us-east-1b"]);
        let pick = |size| choose(&cat, &off, &criteria(size)).expect("a candidate");
        // Same clock (unknown) everywhere: c7g.large (generation 7) beats
        // c6g.large, which has as little memory.
        assert_eq!(pick(Size::Small).instance_type, "c7g.large");
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
        let refused = choose(&cat, &off, &c).expect("ok");
        assert_eq!(refused.instance_type, "m7g.large");
        assert!(
            refused.explanation.ends_with("1 candidate(s)"),
            "{}",
            refused.explanation
        );
        let only_burstable = &cat[..1];
        assert!(choose(only_burstable, &off, &c).is_err());
        c.allow_burstable = true;
        assert!(
            choose(&cat, &off, &c)
                .expect("ok")
                .explanation
                .ends_with("2 candidate(s)")
        );
        assert_eq!(
            choose(only_burstable, &off, &c).expect("ok").instance_type,
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
