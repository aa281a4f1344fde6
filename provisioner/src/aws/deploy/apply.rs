//! `deploy`'s side of the walk: each planned [`Action`] made through
//! [`super::super::api`], and the waits for instances.

use anyhow::Context;

use super::Walk;
use crate::aws::api::{Launch, NewInterface, NewVolume};
use crate::aws::network::{self, Subnet};
use crate::aws::plan::{self, Action};
use crate::aws::spec;
use crate::aws::wait::{self, Waited};

impl Walk<'_> {
    /// Makes one planned change.
    pub(super) async fn apply(&mut self, action: Action) -> anyhow::Result<()> {
        let aws = self.aws;
        let base = self.p.names.base();
        match action {
            Action::RestoreSecret => aws.restore_secret(&self.p.names.secret()).await?,
            Action::PutSecretValue => {
                let key = self.p.auth_key.as_ref().context("no --auth-key-file key")?;
                aws.put_secret_value(&self.p.names.secret(), key.expose())
                    .await?;
            }
            Action::CreateSecret => {
                let name = self.p.names.secret();
                let key = match (&self.p.auth_key, &self.opts.admin) {
                    (Some(k), _) => k.clone(),
                    (None, Some(admin)) => admin
                        .create_key(self.p.role.as_str(), self.opts.auth_key_expiry)
                        .await
                        .context("minting an auth key in control")?,
                    (None, None) => anyhow::bail!("no auth key source"),
                };
                let arn = aws
                    .create_secret(&name, key.expose(), &self.tags(&name))
                    .await?;
                self.known.secret_arn = Some(arn);
            }
            Action::MintKey => {
                let admin = self.opts.admin.as_ref().context("no admin API")?;
                let key = admin
                    .create_key(self.p.role.as_str(), self.opts.auth_key_expiry)
                    .await
                    .context("minting an auth key in control")?;
                aws.put_secret_value(&self.p.names.secret(), key.expose())
                    .await?;
            }
            Action::RetireKey { id } => {
                // Revoke first: should clearing the secret fail, the key in
                // it is already worthless and the next deploy clears it.
                if let Some(id) = id {
                    let admin = self.opts.admin.as_ref().context("no admin API")?;
                    admin
                        .revoke_key(&id)
                        .await
                        .with_context(|| format!("revoking auth key {id} in control"))?;
                }
                aws.put_secret_value(&self.p.names.secret(), spec::RETIRED_AUTH_KEY)
                    .await?;
            }
            Action::CreateRole => {
                aws.create_role(&base, &spec::trust_policy(), &self.tags(&base))
                    .await?;
            }
            Action::PutRolePolicy { name, doc } => {
                let doc = doc.context("the secret's ARN is unknown")?;
                aws.put_role_policy(&base, name, &doc).await?;
            }
            Action::DeleteRolePolicy { name } => aws.delete_role_policy(&base, &name).await?,
            Action::CreateInstanceProfile => {
                aws.create_instance_profile(&base, &self.tags(&base))
                    .await?;
                aws.add_role_to_profile(&base, &base).await?;
            }
            Action::AddRoleToProfile => aws.add_role_to_profile(&base, &base).await?,
            Action::CreateSecurityGroup {
                name,
                description,
                rules,
            } => {
                let id = aws
                    .create_security_group(&self.p.vpc.id, &name, &description, &self.tags(&name))
                    .await?;
                aws.authorize(&id, &rules).await?;
                self.known.security_groups.insert(name, id);
            }
            Action::UpdateRules { id, add, remove } => {
                aws.revoke(&id, &remove).await?;
                aws.authorize(&id, &add).await?;
            }
            Action::CreateBucket => aws.create_bucket(self.bucket_name()?).await?,
            Action::TagBucket => {
                let bucket = self.bucket_name()?;
                aws.tag_bucket(bucket, &self.tags(bucket)).await?;
            }
            Action::BlockPublicAccess => aws.block_public_access(self.bucket_name()?).await?,
            Action::EncryptBucket => {
                aws.encrypt_bucket(self.bucket_name()?, self.opts.kms_key.as_deref())
                    .await?;
            }
            Action::PutBucketPolicy { policy } => {
                aws.put_bucket_policy(self.bucket_name()?, &policy).await?;
            }
            Action::PutLifecycle { rule } => aws.put_lifecycle(self.bucket_name()?, &rule).await?,
            Action::CreateResolverEndpoint {
                name,
                security_group,
            } => {
                let sg = self
                    .known
                    .security_groups
                    .get(&security_group)
                    .with_context(|| format!("security group {security_group} is missing"))?;
                let request = format!("{name}-{}", self.p.vpc.id);
                let id = aws
                    .create_resolver_endpoint(
                        &name,
                        &request,
                        sg,
                        &self.p.dns_subnets,
                        &self.tags(&name),
                    )
                    .await?;
                self.known.resolver_created = Some(id);
            }
            Action::SetSplitDns {
                domain,
                nameservers,
            } => {
                let admin = self.opts.admin.as_ref().context("no admin API")?;
                admin.set_split_dns(&domain, &nameservers).await?;
            }
            Action::CreateTemplate { data } => {
                let id = aws
                    .create_launch_template(&base, &data, &self.tags(&base))
                    .await?;
                self.known.template_id = Some(id);
                self.known.template_version = 1;
            }
            Action::UpdateTemplate { id, data } => {
                self.known.template_version = aws
                    .update_launch_template(&id, &data, &self.tags(&base))
                    .await?;
            }
            Action::Launch { name, subnet } => {
                let id = self.launch(&name, &subnet).await?;
                self.known.launched.push(id);
            }
            Action::Replace { name, old, subnet } => {
                self.progress.detail(&format!("replacing {name} ({old})"));
                let old = [old];
                aws.terminate(&old).await?;
                self.wait_for(&old, "terminated").await?;
                let id = self.launch(&name, &subnet).await?;
                self.wait_for(&[id], "running").await?;
            }
            Action::Terminate { ids } => aws.terminate(&ids).await?,
            Action::SetSourceDestCheck { id, on } => aws.set_source_dest_check(&id, on).await?,
            Action::TailnetRoute {
                table,
                eni,
                replace,
            } => {
                aws.set_tailnet_route(&table, eni.as_deref(), replace)
                    .await?;
            }
            Action::AllocateAddress => {
                let a = aws.allocate_address(&base, &self.tags(&base)).await?;
                self.progress
                    .detail(&format!("allocated Elastic IP {}", a.public_ip));
                self.known.address = Some(a.allocation_id);
            }
            Action::AssociateAddress {
                instance,
                interface,
            } => {
                let id = self.known.address.clone().context("no Elastic IP")?;
                aws.associate_address(&id, &instance, interface.as_deref())
                    .await?;
            }
            Action::ReleaseAddress { address } => aws.release_address(&address).await?,
            Action::CreateEgressInterface { subnet } => {
                let name = self.p.names.egress();
                let sg = self
                    .known
                    .security_groups
                    .get(&name)
                    .with_context(|| format!("security group {name} is missing"))?;
                let tags = plan::egress_interface_tags(self.tags(&name));
                let description = format!(
                    "Causeway {}: forwarded internet traffic leaves here",
                    self.p.names.base()
                );
                let eni = aws
                    .create_egress_interface(
                        &name,
                        &NewInterface {
                            subnet: &subnet,
                            security_group: sg,
                            description: &description,
                            tags: &tags,
                        },
                    )
                    .await?;
                self.progress.detail(&format!(
                    "created egress interface {} ({}, MAC {})",
                    eni.id, eni.private_ip, eni.mac
                ));
                self.known.egress_interface = Some((eni.id, eni.mac));
            }
            Action::SetInterfaceSourceDestCheck { id, on } => {
                aws.set_interface_source_dest_check(&id, on).await?;
            }
            Action::DeleteEgressInterface { id } => {
                aws.delete_network_interface_when_detached(&id, self.opts.wait_timeout)
                    .await?;
            }
            Action::CreateVolume { az, size_gib } => {
                let name = self.p.names.state_volume();
                let id = aws
                    .create_volume(
                        &name,
                        &NewVolume {
                            az: &az,
                            size_gib,
                            tags: &self.tags(&name),
                        },
                    )
                    .await?;
                self.wait_for_volume(&id, "available").await?;
                self.known.volume = Some(id);
            }
            Action::DetachVolume { id } => {
                aws.detach_volume(&id).await?;
                self.wait_for_volume(&id, "available").await?;
            }
            Action::AttachVolume { instance } => {
                let id = self.known.volume.clone().context("no state volume")?;
                aws.attach_volume(&id, &instance, spec::STATE_VOLUME_DEVICE)
                    .await?;
                self.wait_for_volume(&id, "in-use").await?;
            }
        }
        Ok(())
    }

    /// Waits until volume `id` is in `state` (`available`, `in-use`),
    /// up to `--wait-timeout`.
    async fn wait_for_volume(&mut self, id: &str, state: &str) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        loop {
            let now = self.aws.volume(id).await?.map(|v| v.state);
            if now.as_deref() == Some(state) {
                return Ok(());
            }
            if started.elapsed() >= self.opts.wait_timeout {
                anyhow::bail!(
                    "volume {id} not {state} after {} s (it is {}); deploy again to keep waiting",
                    self.opts.wait_timeout.as_secs(),
                    now.as_deref().unwrap_or("gone")
                );
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    }

    fn bucket_name(&self) -> anyhow::Result<&str> {
        self.p.bucket.as_deref().context("no recordings bucket")
    }

    /// Launches instance `name` into `subnet` from the launch template,
    /// tagged with the template version; a public address when the subnet
    /// is public, for direct connections (an Elastic IP instead when it has
    /// an egress interface at device index 1).
    async fn launch(&self, name: &str, subnet: &Subnet) -> anyhow::Result<String> {
        let sg = self.known.security_groups.get(&self.p.names.base());
        let (Some(lt), Some(sg)) = (&self.known.template_id, sg) else {
            anyhow::bail!("the launch template or security group is missing");
        };
        let mut tags = self.tags(name);
        tags.push((
            spec::TAG_TEMPLATE_VERSION.to_owned(),
            self.known.template_version.to_string(),
        ));
        let profile = self.p.names.base();
        let launch = Launch {
            template_id: lt,
            subnet: &subnet.id,
            security_group: sg,
            public_ip: subnet.exposure == network::Exposure::Public,
            egress_interface: self
                .known
                .egress_interface
                .as_ref()
                .map(|(id, _)| id.as_str()),
            instance_profile: &profile,
            name,
            tags: &tags,
        };
        Ok(self.aws.run_instance(&launch).await?)
    }

    /// Waits until every instance of `ids` is in `state`, printing each
    /// change of their states; fails when one dies while starting or at
    /// `--wait-timeout`.
    pub(super) async fn wait_for(&mut self, ids: &[String], state: &str) -> anyhow::Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let waited = wait::instances(
            self.aws,
            ids,
            self.opts.wait_timeout,
            "unknown",
            &mut self.progress,
            |states| {
                if let Some((id, s)) = states.iter().find(|(_, s)| {
                    state == "running" && (*s == "terminated" || *s == "shutting-down")
                }) {
                    anyhow::bail!("instance {id} went {s} while starting; see its console output");
                }
                Ok(ids
                    .iter()
                    .all(|id| states.get(id).is_some_and(|s| s == state)))
            },
        )
        .await?;
        match waited {
            Waited::Done => Ok(()),
            Waited::TimedOut(line) => anyhow::bail!(
                "instances not {state} after {} s ({line}); deploy again to keep waiting",
                self.opts.wait_timeout.as_secs()
            ),
        }
    }
}
