//! The one module that talks to AWS, one module per service. Every call
//! goes through the official SDK and comes back as the plain values of
//! [`super::sizing`], [`super::network`] and [`super::spec`], so the logic
//! that decides what to do never sees an SDK type. Every failure is an
//! [`AwsError`] naming what was being done, to which resource, and AWS's
//! error code (mapped once, in `error`).

mod ec2;
mod error;
mod iam;
mod resolver;
mod route53;
mod s3;
mod secrets;

pub use self::ec2::{
    Address, Image, ImportState, Instance, Launch, LaunchTemplate, NatGateway, NetworkInterface,
    NewImage, NewInterface, NewVolume, RawSubnet, SecurityGroup, Volume, Vpc,
};
pub use self::error::{AwsError, AwsResult};
pub use self::iam::{IamRole, percent_decode};
pub use self::resolver::ResolverEndpoint;
pub use self::s3::BucketSettings;
pub use self::secrets::SecretInfo;
// Plain values of the contract that these calls read and write.
pub use super::spec::{LifecycleRule, TemplateData};

/// Where to reach AWS.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// Region (default: the SDK's chain, then `us-east-1`).
    pub region: Option<String>,
    /// Endpoint URL override (tests: moto).
    pub url: Option<String>,
    /// Attempts per call (1 disables retries; tests against moto).
    pub max_attempts: Option<u32>,
}

/// The SDK clients of one region.
#[derive(Debug, Clone)]
pub struct Aws {
    ec2: aws_sdk_ec2::Client,
    iam: aws_sdk_iam::Client,
    sm: aws_sdk_secretsmanager::Client,
    s3: aws_sdk_s3::Client,
    r53: aws_sdk_route53::Client,
    r53r: aws_sdk_route53resolver::Client,
    /// The region in use.
    pub region: String,
}

impl Aws {
    /// Loads credentials and region from the SDK's default chain, with
    /// overrides; S3 uses path-style addressing when the endpoint is
    /// overridden (moto).
    pub async fn connect(ep: &Endpoint) -> anyhow::Result<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &ep.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(url) = &ep.url {
            loader = loader.endpoint_url(url);
        }
        if let Some(n) = ep.max_attempts {
            loader = loader
                .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(n));
        }
        let mut config = loader.load().await;
        if config.region().is_none() {
            config = config
                .into_builder()
                .region(aws_config::Region::new("us-east-1"))
                .build();
        }
        let path_style = ep.url.is_some() || config.endpoint_url().is_some();
        Ok(Self::from_config(&config, path_style))
    }

    /// The clients of an already loaded SDK config (e.g. with explicit
    /// credentials); `path_style` for S3 behind an endpoint override.
    pub fn from_config(config: &aws_config::SdkConfig, path_style: bool) -> Self {
        let region = config
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".to_owned());
        let s3_config = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(path_style)
            .build();
        Self {
            ec2: aws_sdk_ec2::Client::new(config),
            iam: aws_sdk_iam::Client::new(config),
            sm: aws_sdk_secretsmanager::Client::new(config),
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            r53: aws_sdk_route53::Client::new(config),
            r53r: aws_sdk_route53resolver::Client::new(config),
            region,
        }
    }
}
