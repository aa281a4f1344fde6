//! The launch template: what every instance of the deployment boots with,
//! hardened (IMDSv2 only, hop limit 1, encrypted gp3 root, no key pair),
//! and how a template read back differs from it.

/// What we set in a launch template, read back for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateData {
    /// AMI.
    pub image_id: String,
    /// Instance type.
    pub instance_type: String,
    /// Instance profile name.
    pub instance_profile: String,
    /// User data, decoded.
    pub user_data: String,
    /// `HttpTokens`.
    pub http_tokens: String,
    /// `HttpPutResponseHopLimit`.
    pub hop_limit: i32,
    /// `HttpEndpoint`.
    pub http_endpoint: String,
    /// Root device name.
    pub root_device: String,
    /// Root volume type.
    pub volume_type: String,
    /// Root volume encrypted.
    pub encrypted: bool,
    /// Root volume size in GiB.
    pub volume_size: i32,
    /// A key pair (always `None` for ours).
    pub key_name: Option<String>,
}

impl TemplateData {
    /// The contract's template for an image, a type, an instance profile
    /// and a user data: IMDSv2 required with a hop limit of 1 (so a
    /// container on the instance cannot reach the metadata service), an
    /// encrypted gp3 root volume of `volume_size` GiB, no key pair.
    pub fn wanted(
        image_id: &str,
        root_device: &str,
        instance_type: &str,
        instance_profile: &str,
        user_data: String,
        volume_size: i32,
    ) -> Self {
        Self {
            image_id: image_id.to_owned(),
            instance_type: instance_type.to_owned(),
            instance_profile: instance_profile.to_owned(),
            user_data,
            http_tokens: "required".into(),
            hop_limit: 1,
            http_endpoint: "enabled".into(),
            root_device: root_device.to_owned(),
            volume_type: "gp3".into(),
            encrypted: true,
            volume_size,
            key_name: None,
        }
    }

    /// One line for the report.
    pub fn summary(&self) -> String {
        format!(
            "{} {}, IMDSv2 required (hop limit {}), {} GiB encrypted {} root, no key pair",
            self.image_id, self.instance_type, self.hop_limit, self.volume_size, self.volume_type
        )
    }
}

/// The names of the fields in which `a` and `b` differ, in template order.
pub fn template_diff(a: &TemplateData, b: &TemplateData) -> Vec<&'static str> {
    let fields: [(&'static str, bool); 12] = [
        ("image", a.image_id == b.image_id),
        ("instance type", a.instance_type == b.instance_type),
        ("instance profile", a.instance_profile == b.instance_profile),
        ("user data", a.user_data == b.user_data),
        ("HttpTokens", a.http_tokens == b.http_tokens),
        ("hop limit", a.hop_limit == b.hop_limit),
        ("HttpEndpoint", a.http_endpoint == b.http_endpoint),
        ("root device", a.root_device == b.root_device),
        ("volume type", a.volume_type == b.volume_type),
        ("encryption", a.encrypted == b.encrypted),
        ("volume size", a.volume_size == b.volume_size),
        ("key pair", a.key_name == b.key_name),
    ];
    fields
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(name, _)| name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_diff_names_what_changed() {
        let a = TemplateData::wanted("ami-1", "/dev/xvda", "c7g.xlarge", "p", "x".into(), 8);
        let mut b = a.clone();
        assert!(template_diff(&a, &b).is_empty());
        b.http_tokens = "optional".into();
        b.user_data = "y".into();
        assert_eq!(template_diff(&a, &b), ["user data", "HttpTokens"]);
    }

    #[test]
    fn the_wanted_template_is_hardened() {
        let t = TemplateData::wanted("ami-1", "/dev/xvda", "c7g.xlarge", "p", "x".into(), 8);
        assert_eq!(
            (
                t.http_tokens.as_str(),
                t.hop_limit,
                t.encrypted,
                t.key_name.as_deref()
            ),
            ("required", 1, true, None)
        );
        assert_eq!(
            t.summary(),
            "ami-1 c7g.xlarge, IMDSv2 required (hop limit 1), 8 GiB encrypted gp3 root, no key pair"
        );
    }
}
