//! IAM and bucket policy documents, and comparing them by meaning.

use serde_json::json;

/// The trust policy of the instance role: EC2 may assume it.
pub fn trust_policy() -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole"
        }]
    })
    .to_string()
}

/// The inline policy reading exactly one secret.
pub fn secret_policy(secret_arn: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "ReadOwnAuthKey",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": secret_arn
        }]
    })
    .to_string()
}

/// The subnet router's inline policy without SNAT: point the tailnet's
/// return route at itself (`ec2:ReplaceRoute`, `ec2:CreateRoute` when the
/// route is missing) in exactly `tables` of `account` in `region`, both
/// actions scoped by the route table's ARN, which is what IAM supports for
/// them; and read route tables (`ec2:DescribeRouteTables` supports no
/// resource-level permission, so it is `*`: read-only).
pub fn return_route_policy(region: &str, account: &str, tables: &[String]) -> String {
    let partition = partition(region);
    let arns: Vec<String> = tables
        .iter()
        .map(|t| format!("arn:{partition}:ec2:{region}:{account}:route-table/{t}"))
        .collect();
    json!({
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "MoveTailnetReturnRoute",
                "Effect": "Allow",
                "Action": ["ec2:CreateRoute", "ec2:ReplaceRoute"],
                "Resource": arns
            },
            {
                "Sid": "ReadRouteTables",
                "Effect": "Allow",
                "Action": "ec2:DescribeRouteTables",
                "Resource": "*"
            }
        ]
    })
    .to_string()
}

/// [`return_route_policy`]'s grants in one line for the plan: each
/// statement's actions and what they apply to, route tables by ID.
pub fn return_route_summary(doc: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(doc) else {
        return "unreadable policy document".to_owned();
    };
    let strings = |x: &serde_json::Value| -> Vec<String> {
        match x {
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
            serde_json::Value::String(s) => vec![s.clone()],
            _ => Vec::new(),
        }
    };
    let parts: Vec<String> = v["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|st| {
            let resources: Vec<String> = strings(&st["Resource"])
                .into_iter()
                .map(|r| match r.split_once(":route-table/") {
                    Some((_, id)) => id.to_owned(),
                    None => r,
                })
                .collect();
            format!(
                "{} on {}",
                strings(&st["Action"]).join(", "),
                resources.join(", ")
            )
        })
        .collect();
    parts.join("; ")
}

/// The ARN partition of `region` (`aws-cn` in China, `aws-us-gov` in
/// GovCloud, `aws` elsewhere).
fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// The recorder's inline policy: write recordings (multipart uploads
/// included: the recorder aborts the ones it gives up on), locate the
/// bucket; read and list only for the web UI; with an SSE-KMS key, the key
/// operations its uploads need (`kms:GenerateDataKey` for each object,
/// `kms:Decrypt` to complete a multipart upload and to read back).
pub fn recordings_policy(bucket: &str, ui: bool, kms_key: Option<&str>) -> String {
    let mut statements = vec![
        json!({
            "Sid": "WriteRecordings",
            "Effect": "Allow",
            "Action": ["s3:AbortMultipartUpload", "s3:PutObject"],
            "Resource": format!("arn:aws:s3:::{bucket}/*")
        }),
        json!({
            "Sid": "LocateBucket",
            "Effect": "Allow",
            "Action": "s3:GetBucketLocation",
            "Resource": format!("arn:aws:s3:::{bucket}")
        }),
    ];
    if ui {
        statements.push(json!({
            "Sid": "ReadRecordings",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": format!("arn:aws:s3:::{bucket}/*")
        }));
        statements.push(json!({
            "Sid": "ListRecordings",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": format!("arn:aws:s3:::{bucket}")
        }));
    }
    if let Some(key) = kms_key {
        statements.push(json!({
            "Sid": "UseRecordingsKey",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": key
        }));
    }
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

/// The bucket policy refusing every request not made over TLS.
pub fn tls_only_bucket_policy(bucket: &str) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [format!("arn:aws:s3:::{bucket}"), format!("arn:aws:s3:::{bucket}/*")],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}
        }]
    })
    .to_string()
}

/// Whether two JSON policy documents mean the same (IAM returns them
/// URL-encoded and reformatted; compare parsed values).
pub fn same_policy(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Value>(a),
        serde_json::from_str::<serde_json::Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_policy_names_exactly_one_secret_and_one_action() {
        let v: serde_json::Value = serde_json::from_str(&secret_policy("arn:s")).expect("json");
        let st = v["Statement"].as_array().expect("statements");
        assert_eq!(st.len(), 1);
        assert_eq!(st[0]["Action"], "secretsmanager:GetSecretValue");
        assert_eq!(st[0]["Resource"], "arn:s");
    }

    #[test]
    fn the_recorder_policy_adds_read_and_list_for_the_ui_and_the_key_with_kms() {
        let grants = |ui, kms: Option<&str>| {
            let v: serde_json::Value =
                serde_json::from_str(&recordings_policy("b", ui, kms)).expect("json");
            let mut a: Vec<String> = v["Statement"]
                .as_array()
                .expect("statements")
                .iter()
                .flat_map(|s| {
                    let resource = s["Resource"].as_str().expect("one resource").to_owned();
                    let actions: Vec<String> = match &s["Action"] {
                        serde_json::Value::Array(a) => a
                            .iter()
                            .map(|x| x.as_str().expect("action").to_owned())
                            .collect(),
                        one => vec![one.as_str().expect("action").to_owned()],
                    };
                    actions
                        .into_iter()
                        .map(move |a| format!("{a} on {resource}"))
                })
                .collect();
            a.sort();
            a
        };
        assert_eq!(
            grants(false, None),
            [
                "s3:AbortMultipartUpload on arn:aws:s3:::b/*",
                "s3:GetBucketLocation on arn:aws:s3:::b",
                "s3:PutObject on arn:aws:s3:::b/*"
            ]
        );
        assert_eq!(
            grants(true, None),
            [
                "s3:AbortMultipartUpload on arn:aws:s3:::b/*",
                "s3:GetBucketLocation on arn:aws:s3:::b",
                "s3:GetObject on arn:aws:s3:::b/*",
                "s3:ListBucket on arn:aws:s3:::b",
                "s3:PutObject on arn:aws:s3:::b/*"
            ]
        );
        let key = "arn:aws:kms:eu-west-1:123456789012:key/k";
        let with_key = grants(false, Some(key));
        assert!(
            with_key.contains(&format!("kms:Decrypt on {key}"))
                && with_key.contains(&format!("kms:GenerateDataKey on {key}"))
                && with_key.len() == 5,
            "{with_key:?}"
        );
    }

    #[test]
    fn the_return_route_policy_moves_routes_only_in_the_given_tables() {
        let doc = return_route_policy(
            "eu-west-1",
            "123456789012",
            &[
                "rtb-0aaaaaaaaaaaaaaaa".into(),
                "rtb-0bbbbbbbbbbbbbbbb".into(),
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&doc).expect("json");
        let st = v["Statement"].as_array().expect("statements");
        assert_eq!(st.len(), 2);
        assert_eq!(
            st[0]["Action"],
            serde_json::json!(["ec2:CreateRoute", "ec2:ReplaceRoute"])
        );
        assert_eq!(
            st[0]["Resource"],
            serde_json::json!([
                "arn:aws:ec2:eu-west-1:123456789012:route-table/rtb-0aaaaaaaaaaaaaaaa",
                "arn:aws:ec2:eu-west-1:123456789012:route-table/rtb-0bbbbbbbbbbbbbbbb"
            ])
        );
        // The only `*`: a read, which IAM cannot scope.
        assert_eq!(
            (st[1]["Action"].as_str(), st[1]["Resource"].as_str()),
            (Some("ec2:DescribeRouteTables"), Some("*"))
        );
        assert_eq!(
            return_route_summary(&doc),
            "ec2:CreateRoute, ec2:ReplaceRoute on rtb-0aaaaaaaaaaaaaaaa, rtb-0bbbbbbbbbbbbbbbb; ec2:DescribeRouteTables on *"
        );
        let gov = return_route_policy("us-gov-west-1", "1", &["rtb-12345678".into()]);
        assert!(
            gov.contains("arn:aws-us-gov:ec2:us-gov-west-1:1:route-table/rtb-12345678"),
            "{gov}"
        );
    }

    #[test]
    fn policies_compare_by_meaning_not_by_spelling() {
        assert!(same_policy(r#"{"a": 1, "b": [2]}"#, r#"{"b":[2],"a":1}"#));
        assert!(!same_policy(r#"{"a": 1}"#, r#"{"a": 2}"#));
    }
}
