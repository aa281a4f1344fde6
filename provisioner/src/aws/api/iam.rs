//! IAM: the instance role, its inline policies, and the instance profile.

use std::collections::BTreeMap;

use super::Aws;
use super::error::{AwsResult, Sent};

/// An IAM role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamRole {
    /// Name.
    pub name: String,
    /// ARN.
    pub arn: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

const NO_SUCH_ENTITY: &[&str] = &["NoSuchEntity"];

impl Aws {
    /// The IAM role `name`.
    pub async fn role(&self, name: &str) -> AwsResult<Option<IamRole>> {
        let out = self
            .iam
            .get_role()
            .role_name(name)
            .send()
            .await
            .absent_on(NO_SUCH_ENTITY)
            .or_fail("reading IAM role", name)?;
        let Some(r) = out.as_ref().and_then(|o| o.role()) else {
            return Ok(None);
        };
        let tags = self
            .iam
            .list_role_tags()
            .role_name(name)
            .send()
            .await
            .or_fail("reading tags of IAM role", name)?
            .tags()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect();
        Ok(Some(IamRole {
            name: name.to_owned(),
            arn: r.arn().to_owned(),
            tags,
        }))
    }

    /// Names of roles starting with `prefix`.
    pub async fn role_names(&self, prefix: &str) -> AwsResult<Vec<String>> {
        let pages = self
            .iam
            .list_roles()
            .into_paginator()
            .send()
            .collect::<Vec<_>>()
            .await;
        let mut out = Vec::new();
        for page in pages {
            let page = page.or_fail("listing IAM roles", prefix)?;
            out.extend(
                page.roles()
                    .iter()
                    .map(|r| r.role_name().to_owned())
                    .filter(|n| n.starts_with(prefix)),
            );
        }
        Ok(out)
    }

    /// Creates an IAM role that `trust` lets assume it; returns its ARN.
    pub async fn create_role(
        &self,
        name: &str,
        trust: &str,
        tags: &[(String, String)],
    ) -> AwsResult<String> {
        let out = self
            .iam
            .create_role()
            .role_name(name)
            .assume_role_policy_document(trust)
            .description("Causeway appliance")
            .set_tags(Some(iam_tags(tags)))
            .send()
            .await
            .or_fail("creating IAM role", name)?;
        Ok(out.role().map(|r| r.arn().to_owned()).unwrap_or_default())
    }

    /// Inline policies of a role, by name, decoded.
    pub async fn role_policies(&self, role: &str) -> AwsResult<BTreeMap<String, String>> {
        let names = self
            .iam
            .list_role_policies()
            .role_name(role)
            .send()
            .await
            .or_fail("listing inline policies of IAM role", role)?;
        let mut out = BTreeMap::new();
        for name in names.policy_names() {
            let doc = self
                .iam
                .get_role_policy()
                .role_name(role)
                .policy_name(name)
                .send()
                .await
                .or_fail(
                    "reading inline policy of IAM role",
                    format!("{role}/{name}"),
                )?;
            out.insert(name.clone(), decode_policy(doc.policy_document()));
        }
        Ok(out)
    }

    /// Sets an inline policy of a role.
    pub async fn put_role_policy(&self, role: &str, name: &str, doc: &str) -> AwsResult<()> {
        self.iam
            .put_role_policy()
            .role_name(role)
            .policy_name(name)
            .policy_document(doc)
            .send()
            .await
            .or_fail(
                "writing inline policy of IAM role",
                format!("{role}/{name}"),
            )?;
        Ok(())
    }

    /// Removes an inline policy of a role (gone already is fine).
    pub async fn delete_role_policy(&self, role: &str, name: &str) -> AwsResult<()> {
        self.iam
            .delete_role_policy()
            .role_name(role)
            .policy_name(name)
            .send()
            .await
            .absent_on(NO_SUCH_ENTITY)
            .or_fail(
                "deleting inline policy of IAM role",
                format!("{role}/{name}"),
            )?;
        Ok(())
    }

    /// Deletes a role (its policies and profiles must be gone).
    pub async fn delete_role(&self, name: &str) -> AwsResult<()> {
        self.iam
            .delete_role()
            .role_name(name)
            .send()
            .await
            .absent_on(NO_SUCH_ENTITY)
            .or_fail("deleting IAM role", name)?;
        Ok(())
    }

    /// The roles in instance profile `name`, or `None` if it does not exist.
    pub async fn instance_profile(&self, name: &str) -> AwsResult<Option<Vec<String>>> {
        let out = self
            .iam
            .get_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
            .absent_on(NO_SUCH_ENTITY)
            .or_fail("reading instance profile", name)?;
        Ok(out.and_then(|o| {
            o.instance_profile()
                .map(|p| p.roles().iter().map(|r| r.role_name().to_owned()).collect())
        }))
    }

    /// Creates an instance profile.
    pub async fn create_instance_profile(
        &self,
        name: &str,
        tags: &[(String, String)],
    ) -> AwsResult<()> {
        self.iam
            .create_instance_profile()
            .instance_profile_name(name)
            .set_tags(Some(iam_tags(tags)))
            .send()
            .await
            .or_fail("creating instance profile", name)?;
        Ok(())
    }

    /// Puts `role` into instance profile `name`.
    pub async fn add_role_to_profile(&self, name: &str, role: &str) -> AwsResult<()> {
        self.iam
            .add_role_to_instance_profile()
            .instance_profile_name(name)
            .role_name(role)
            .send()
            .await
            .or_fail("adding the role to instance profile", name)?;
        Ok(())
    }

    /// Takes `role` out of instance profile `name` (gone already is fine).
    pub async fn remove_role_from_profile(&self, name: &str, role: &str) -> AwsResult<()> {
        self.iam
            .remove_role_from_instance_profile()
            .instance_profile_name(name)
            .role_name(role)
            .send()
            .await
            .absent_on(NO_SUCH_ENTITY)
            .or_fail("removing the role from instance profile", name)?;
        Ok(())
    }

    /// Deletes an instance profile (gone already is fine).
    pub async fn delete_instance_profile(&self, name: &str) -> AwsResult<()> {
        self.iam
            .delete_instance_profile()
            .instance_profile_name(name)
            .send()
            .await
            .absent_on(NO_SUCH_ENTITY)
            .or_fail("deleting instance profile", name)?;
        Ok(())
    }
}

fn iam_tags(tags: &[(String, String)]) -> Vec<aws_sdk_iam::types::Tag> {
    tags.iter()
        .filter_map(|(k, v)| {
            aws_sdk_iam::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
                .ok()
        })
        .collect()
}

/// Decodes IAM's URL-encoded policy documents (RFC 3986 percent-encoding).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        // Bytes, not a `str` slice: a `%` before a multi-byte character
        // must not split it.
        if b == b'%'
            && let Some(v) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A policy document as IAM returned it, decoded when it is URL-encoded.
fn decode_policy(doc: &str) -> String {
    if doc.trim_start().starts_with('{') {
        doc.to_owned()
    } else {
        percent_decode(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iam_policy_documents_are_url_decoded() {
        assert_eq!(
            decode_policy("%7B%22Version%22%3A%222012-10-17%22%7D"),
            r#"{"Version":"2012-10-17"}"#
        );
        assert_eq!(decode_policy(r#"{"a":1}"#), r#"{"a":1}"#);
        assert_eq!(percent_decode("a%2Bb+c%"), "a+b c%");
        assert_eq!(percent_decode("%aé%zz"), "%aé%zz");
    }
}
