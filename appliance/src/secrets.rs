//! The auth key from AWS Secrets Manager (`[node] auth_key_secret = "ARN"`),
//! fetched once, at first registration, with the SDK's default credential
//! chain: the instance role through IMDSv2 on EC2, the environment
//! elsewhere (`AWS_ENDPOINT_URL` redirects it, e.g. to an emulator). The
//! value is never logged.

use anyhow::{Context, bail};

/// A Secrets Manager secret ARN, checked for shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretArn {
    arn: String,
    region: String,
}

impl SecretArn {
    /// Parses `arn:PARTITION:secretsmanager:REGION:ACCOUNT:secret:NAME`.
    pub fn parse(arn: &str) -> anyhow::Result<Self> {
        let parts: Vec<&str> = arn.splitn(7, ':').collect();
        let [prefix, _partition, service, region, _account, kind, name] = parts[..] else {
            bail!(
                "{arn:?} is not an ARN; expected arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME"
            );
        };
        if prefix != "arn" || service != "secretsmanager" || kind != "secret" {
            bail!(
                "{arn:?} is not a Secrets Manager secret ARN; expected arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME"
            );
        }
        if region.is_empty() || name.is_empty() {
            bail!("{arn:?} has no region or no secret name");
        }
        Ok(Self {
            arn: arn.to_owned(),
            region: region.to_owned(),
        })
    }
}

/// Fetches the auth key stored in the secret `arn`, trimmed, from
/// `endpoint` when given (`node.secrets_manager_endpoint`: a VPC interface
/// endpoint or a FIPS endpoint), else from the region's endpoint.
pub async fn fetch_auth_key(arn: &str, endpoint: Option<&str>) -> anyhow::Result<String> {
    let overrides = Overrides {
        endpoint: endpoint.map(str::to_owned),
        credentials: None,
    };
    fetch(&SecretArn::parse(arn)?, overrides).await
}

/// Overrides of the default chain: the endpoint (config), credentials (tests).
#[derive(Debug, Default)]
struct Overrides {
    endpoint: Option<String>,
    credentials: Option<aws_sdk_secretsmanager::config::Credentials>,
}

async fn fetch(arn: &SecretArn, overrides: Overrides) -> anyhow::Result<String> {
    // The secret lives in the region its ARN names, whatever the default.
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(arn.region.clone()));
    if let Some(url) = overrides.endpoint {
        loader = loader.endpoint_url(url);
    }
    if let Some(c) = overrides.credentials {
        loader = loader.credentials_provider(c);
    }
    let config = loader.load().await;
    let client = aws_sdk_secretsmanager::Client::new(&config);
    let out = client
        .get_secret_value()
        .secret_id(&arn.arn)
        .send()
        .await
        .map_err(|e| {
            use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
            anyhow::anyhow!(
                "reading secret {}: AWS error {}: {}",
                arn.arn,
                e.code().unwrap_or("no answer"),
                e.message().map(str::to_owned).unwrap_or_else(|| {
                    aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string()
                })
            )
        })?;
    let key = out
        .secret_string()
        .with_context(|| format!("secret {} holds no string value", arn.arn))?
        .trim();
    if key.is_empty() {
        bail!("secret {} is empty", arn.arn);
    }
    Ok(key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_test_support::{Moto, REGION, TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY};

    #[test]
    fn secret_arns_are_checked_for_shape() {
        let arn = SecretArn::parse(
            "arn:aws:secretsmanager:eu-west-1:123456789012:secret:causeway/p/relay-authkey-AbCdEf",
        )
        .expect("valid");
        assert_eq!(arn.region, "eu-west-1");
        assert!(SecretArn::parse("causeway/p/relay-authkey").is_err());
        let err = SecretArn::parse("arn:aws:s3:::bucket/x:y:z").expect_err("not a secret");
        assert!(err.to_string().contains("Secrets Manager"), "{err}");
    }

    #[tokio::test]
    async fn the_auth_key_is_fetched_from_secrets_manager() {
        let moto = Moto::start();
        let creds = aws_sdk_secretsmanager::config::Credentials::new(
            TEST_ACCESS_KEY_ID,
            TEST_SECRET_ACCESS_KEY,
            None,
            None,
            "test",
        );
        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
            .region(aws_sdk_secretsmanager::config::Region::new(REGION))
            .endpoint_url(moto.url())
            .credentials_provider(creds.clone())
            .build();
        let admin = aws_sdk_secretsmanager::Client::from_conf(config);
        let created = admin
            .create_secret()
            .name("causeway/t/subnet-router-authkey")
            .secret_string("cwk_0123456789ab_secret\n")
            .send()
            .await
            .expect("moto stores the secret");
        let arn = SecretArn::parse(created.arn().expect("an ARN")).expect("moto's ARN parses");
        let overrides = || Overrides {
            endpoint: Some(moto.url().to_owned()),
            credentials: Some(creds.clone()),
        };

        let key = fetch(&arn, overrides()).await.expect("fetched");

        assert_eq!(key, "cwk_0123456789ab_secret");
        let missing = SecretArn::parse(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:causeway/none-AbCdEf",
        )
        .expect("valid shape");
        let err = fetch(&missing, overrides())
            .await
            .expect_err("no such secret");
        assert!(
            err.to_string().contains("ResourceNotFoundException"),
            "{err}"
        );
    }
}
