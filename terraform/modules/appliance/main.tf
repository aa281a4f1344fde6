# One Causeway appliance (or an HA pair) as docs/reference/aws-contract.md
# describes it: the same names, tags, sizing rules and hardening as
# `provisioner deploy --cloud aws`.

locals {
  base_name      = "causeway-${var.name}-${var.role}"
  instance_count = var.ha ? 2 : 1

  contract_tags = {
    "causeway:deployment" = var.name
    "causeway:role"       = var.role
  }
  tags = merge(var.tags, local.contract_tags, { Name = local.base_name })

  instance_names = [for i in range(local.instance_count) : var.ha ? "${local.base_name}-${i}" : local.base_name]

  # The tailnet's CGNAT range: the return route when SNAT is off.
  tailnet_cidr = "100.64.0.0/10"
}

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_vpc" "this" {
  id = var.vpc_id
}

data "aws_subnet" "this" {
  count = local.instance_count
  id    = var.subnet_ids[count.index]
}

locals {
  availability_zones = data.aws_subnet.this[*].availability_zone

  vpc_ipv4_cidrs = [for a in data.aws_vpc.this.cidr_block_associations : a.cidr_block if a.state == "associated"]
  vpc_cidrs = compact(concat(
    local.vpc_ipv4_cidrs,
    [data.aws_vpc.this.ipv6_cidr_block],
  ))
  # An app connector's routes are learned from its domains' DNS answers at
  # run time: it is configured with none.
  # A 4via6 router maps IPv4 ranges only: by default the VPC's IPv4 blocks.
  routes = var.role == "exit-node" ? ["0.0.0.0/0", "::/0"] : var.role == "app-connector" ? [] : var.routes != null ? var.routes : var.role == "via6" ? local.vpc_ipv4_cidrs : local.vpc_cidrs
}

# ---------------------------------------------------------------------------
# Image: `ami_id`, or the newest of ours tagged for the architecture.

data "aws_ami" "tagged" {
  count       = var.ami_id == null ? 1 : 0
  owners      = ["self"]
  most_recent = true

  filter {
    name   = "tag:causeway:image"
    values = ["appliance"]
  }
  filter {
    name   = "tag:causeway:arch"
    values = [var.arch]
  }
  filter {
    name   = "state"
    values = ["available"]
  }
}

data "aws_ami" "given" {
  count              = var.ami_id == null ? 0 : 1
  include_deprecated = true

  filter {
    name   = "image-id"
    values = [var.ami_id]
  }
}

locals {
  image = var.ami_id == null ? data.aws_ami.tagged[0] : data.aws_ami.given[0]
  # An image found by tag has the tag's architecture; a given one its own.
  arch = var.ami_id == null ? var.arch : data.aws_ami.given[0].architecture

  # The root volume keeps the image's snapshot size unless asked otherwise;
  # stating it keeps the gp3 override complete (RunInstances then needs no
  # lookup of the snapshot).
  image_root_size = one([
    for m in local.image.block_device_mappings : tonumber(m.ebs["volume_size"])
    if m.device_name == local.image.root_device_name && try(m.ebs["volume_size"], "") != ""
  ])
  root_volume_size = var.root_volume_size != null ? var.root_volume_size : local.image_root_size
}

# ---------------------------------------------------------------------------
# Sizing from the catalogue, never a hard-coded list: current generation,
# the image's architecture, no bare metal, non-burstable unless allowed,
# offered in every chosen AZ. A tier is a minimum vCPU count; the search
# covers the minimum up to twice it, one query per count.

locals {
  tier_min_vcpus = {
    small                = 2
    standard             = 4
    "consistent-network" = 17
  }
  min_vcpus   = local.tier_min_vcpus[var.size]
  vcpu_ladder = var.instance_type == null ? range(local.min_vcpus, local.min_vcpus * 2 + 1) : []

  catalogue_filters = merge(
    {
      "current-generation"                    = ["true"]
      "bare-metal"                            = ["false"]
      "processor-info.supported-architecture" = [local.arch]
    },
    var.allow_burstable ? {} : { "burstable-performance-supported" = ["false"] },
  )
}

data "aws_ec2_instance_types" "by_vcpus" {
  for_each = toset([for n in local.vcpu_ladder : tostring(n)])

  dynamic "filter" {
    for_each = merge(local.catalogue_filters, { "vcpu-info.default-vcpus" = [each.key] })
    content {
      name   = filter.key
      values = filter.value
    }
  }
}

locals {
  # The fewest vCPUs with any candidate in the region. Memory is looked up
  # only for those, so the lookups do not wait for the subnets' AZs (which
  # are unknown at plan time when the subnets are created alongside).
  vcpu_counts_found = [for n in local.vcpu_ladder : n if length(data.aws_ec2_instance_types.by_vcpus[tostring(n)].instance_types) > 0]
  candidates        = length(local.vcpu_counts_found) > 0 ? toset(data.aws_ec2_instance_types.by_vcpus[tostring(local.vcpu_counts_found[0])].instance_types) : toset([])
}

data "aws_ec2_instance_type" "candidate" {
  for_each      = local.candidates
  instance_type = each.key
}

data "aws_ec2_instance_type" "given" {
  count         = var.instance_type == null ? 0 : 1
  instance_type = var.instance_type
}

data "aws_ec2_instance_type_offerings" "in_az" {
  count         = local.instance_count
  location_type = "availability-zone"

  filter {
    name   = "location"
    values = [local.availability_zones[count.index]]
  }
  filter {
    name   = "instance-type"
    values = var.instance_type == null ? (length(local.candidates) > 0 ? tolist(local.candidates) : ["none"]) : [var.instance_type]
  }
}

locals {
  offered_everywhere = setintersection([for o in data.aws_ec2_instance_type_offerings.in_az : toset(o.instance_types)]...)

  # Least memory, then c over m over other families, then the name.
  family_rank = { for t in local.candidates : t => startswith(t, "c") ? 0 : startswith(t, "m") ? 1 : 2 }
  ranked = sort([
    for t in local.candidates :
    format("%012d/%d/%s", data.aws_ec2_instance_type.candidate[t].memory_size, local.family_rank[t], t)
    if contains(local.offered_everywhere, t)
  ])
  chosen_instance_type = length(local.ranked) > 0 ? split("/", local.ranked[0])[2] : null

  instance_type = var.instance_type != null ? var.instance_type : local.chosen_instance_type
  instance_type_problem = var.instance_type == null ? (
    local.chosen_instance_type == null ? "no ${local.arch}${var.allow_burstable ? "" : " non-burstable"} current-generation instance type with ${local.min_vcpus}-${local.min_vcpus * 2} vCPUs is offered in ${join(", ", local.availability_zones)}; set instance_type or another size" : ""
    ) : (
    !contains(data.aws_ec2_instance_type.given[0].supported_architectures, local.arch) ? "instance_type ${var.instance_type} does not support the image's architecture ${local.arch}" :
    data.aws_ec2_instance_type.given[0].burstable_performance_supported && !var.allow_burstable ? "instance_type ${var.instance_type} is burstable; set allow_burstable = true to use it" :
    !contains(local.offered_everywhere, var.instance_type) ? "instance_type ${var.instance_type} is not offered in every availability zone of ${join(", ", local.availability_zones)}" : ""
  )
}

# ---------------------------------------------------------------------------
# Auth key: a secret only the instance role can read.

resource "aws_secretsmanager_secret" "auth_key" {
  #checkov:skip=CKV_AWS_149: the contract uses the account's AWS-managed key (aws/secretsmanager); a customer key would add a KMS grant to the minimal instance policy.
  #checkov:skip=CKV2_AWS_57: auth keys are single-use registration keys issued by control; rotation means issuing a new key in control, not a Lambda rotation.
  count = local.create_secret ? 1 : 0

  name                    = "causeway/${var.name}/${var.role}-authkey"
  description             = "Causeway auth key for ${local.base_name}"
  recovery_window_in_days = var.secret_recovery_window_in_days
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "auth_key" {
  count = local.create_secret ? 1 : 0

  secret_id = aws_secretsmanager_secret.auth_key[0].id
  # Write-only: the key is sent to Secrets Manager and kept out of plan and state.
  secret_string_wo         = var.auth_key
  secret_string_wo_version = var.auth_key_version
}

locals {
  create_secret   = var.auth_key_secret_arn == null && var.role != "control"
  has_secret      = local.create_secret || var.auth_key_secret_arn != null
  auth_key_secret = local.create_secret ? aws_secretsmanager_secret.auth_key[0].arn : var.auth_key_secret_arn
}

# ---------------------------------------------------------------------------
# IAM: the instance role reads that one secret and nothing else.

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name               = local.base_name
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = local.tags
}

data "aws_iam_policy_document" "auth_key" {
  count = local.has_secret ? 1 : 0

  statement {
    sid       = "ReadOwnAuthKey"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [local.auth_key_secret]
  }
}

resource "aws_iam_role_policy" "auth_key" {
  count  = local.has_secret ? 1 : 0
  name   = "causeway-auth-key"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.auth_key[0].json
}

# Subnet router without SNAT: the HA primary points the tailnet's return
# route at itself, in the given route tables only (ReplaceRoute and
# CreateRoute take the route table's ARN; DescribeRouteTables has no
# resource-level permission, so it is `*`, read-only).
locals {
  moves_return_route = var.role == "subnet-router" && !var.snat && length(var.route_table_ids) > 0
}

data "aws_iam_policy_document" "return_route" {
  count = local.moves_return_route ? 1 : 0

  statement {
    sid     = "MoveTailnetReturnRoute"
    actions = ["ec2:CreateRoute", "ec2:ReplaceRoute"]
    resources = [for t in var.route_table_ids :
    "arn:${data.aws_partition.current.partition}:ec2:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:route-table/${t}"]
  }
  statement {
    sid       = "ReadRouteTables"
    actions   = ["ec2:DescribeRouteTables"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "return_route" {
  count  = local.moves_return_route ? 1 : 0
  name   = "causeway-return-route"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.return_route[0].json
}

resource "aws_iam_role_policy" "extra" {
  for_each = var.extra_role_policies
  name     = each.key
  role     = aws_iam_role.this.id
  policy   = each.value
}

resource "aws_iam_instance_profile" "this" {
  name = local.base_name
  role = aws_iam_role.this.name
  tags = local.tags
}

# ---------------------------------------------------------------------------
# Network: the role's one port in, anything out. Nodes take WireGuard on
# UDP 41641; control runs no WireGuard node and takes nodes' connections on
# TCP 8080 (its admin API stays on 127.0.0.1:8081).

locals {
  listen = var.role == "control" ? { protocol = "tcp", port = 8080, what = "control" } : { protocol = "udp", port = 41641, what = "WireGuard" }
}

resource "aws_security_group" "this" {
  name        = local.base_name
  description = "Causeway ${var.role}: ${local.listen.what} ${upper(local.listen.protocol)} ${local.listen.port} inbound only"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "listen" {
  for_each = toset(["0.0.0.0/0", "::/0"])

  security_group_id = aws_security_group.this.id
  description       = local.listen.what
  ip_protocol       = local.listen.protocol
  from_port         = local.listen.port
  to_port           = local.listen.port
  cidr_ipv4         = strcontains(each.key, ":") ? null : each.key
  cidr_ipv6         = strcontains(each.key, ":") ? each.key : null
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "all" {
  #checkov:skip=CKV_AWS_382: a mesh node talks to control, relays, peers and routed subnets on any port; egress all is the contract.
  for_each = toset(["0.0.0.0/0", "::/0"])

  security_group_id = aws_security_group.this.id
  description       = "All egress"
  ip_protocol       = "-1"
  cidr_ipv4         = strcontains(each.key, ":") ? null : each.key
  cidr_ipv6         = strcontains(each.key, ":") ? each.key : null
  tags              = local.tags
}

# ---------------------------------------------------------------------------
# Exit node with an egress subnet: a second interface in a private subnet
# whose default route is a NAT gateway. The appliance sends the tailnet's
# internet traffic out of it (it finds it by its MAC address, egress_mac in
# the user data), so third parties see the NAT gateway's address, while its
# own WireGuard traffic keeps the primary interface, which needs an Elastic
# IP: AWS assigns no public address at launch to an instance with two
# interfaces. Both interfaces are made here and attached at launch, so the
# egress interface is there when the appliance starts.

locals {
  egress           = length(var.egress_subnet_ids) > 0
  egress_subnet_id = one(var.egress_subnet_ids)
  # An exit node and an app connector forward to arbitrary destinations;
  # a router forwards only when it keeps sources.
  source_dest_check = contains(["exit-node", "app-connector"], var.role) ? false : var.snat
}

data "aws_subnet" "egress" {
  count = local.egress ? 1 : 0
  id    = local.egress_subnet_id
}

data "aws_route_table" "egress" {
  count     = local.egress ? 1 : 0
  subnet_id = local.egress_subnet_id
}

locals {
  egress_default_route = local.egress ? one([for r in data.aws_route_table.egress[0].routes : r if r.cidr_block == "0.0.0.0/0"]) : null
  egress_nat_gateway   = local.egress_default_route == null ? "" : local.egress_default_route.nat_gateway_id
}

resource "aws_security_group" "egress" {
  count       = local.egress ? 1 : 0
  name        = "${local.base_name}-egress"
  description = "Causeway exit node egress interface: no inbound"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${local.base_name}-egress" })
}

resource "aws_vpc_security_group_egress_rule" "egress_all" {
  #checkov:skip=CKV_AWS_382: the egress interface carries the tailnet's internet traffic to any address and port; that is what an exit node is for.
  for_each = local.egress ? toset(["0.0.0.0/0", "::/0"]) : toset([])

  security_group_id = aws_security_group.egress[0].id
  description       = "All egress"
  ip_protocol       = "-1"
  cidr_ipv4         = strcontains(each.key, ":") ? null : each.key
  cidr_ipv6         = strcontains(each.key, ":") ? each.key : null
  tags              = local.tags
}

resource "aws_network_interface" "primary" {
  count             = local.egress ? 1 : 0
  subnet_id         = var.subnet_ids[0]
  security_groups   = [aws_security_group.this.id]
  source_dest_check = local.source_dest_check
  description       = "Causeway ${local.base_name}: WireGuard and control"
  tags              = merge(local.tags, { Name = local.instance_names[0] })
}

resource "aws_network_interface" "egress" {
  count             = local.egress ? 1 : 0
  subnet_id         = local.egress_subnet_id
  security_groups   = [aws_security_group.egress[0].id]
  source_dest_check = false
  description       = "Causeway ${local.base_name}: forwarded internet traffic leaves here"
  tags              = merge(local.tags, { Name = "${local.base_name}-egress", "causeway:interface" = "egress" })

  # Made only once the subnet's default route is known to be a NAT gateway.
  depends_on = [data.aws_nat_gateway.egress]

  lifecycle {
    precondition {
      condition     = !local.egress || data.aws_subnet.egress[0].availability_zone == local.availability_zones[0]
      error_message = "egress_subnet_ids ${coalesce(local.egress_subnet_id, "-")} is in ${local.egress ? data.aws_subnet.egress[0].availability_zone : "-"}, but the instance's subnet ${var.subnet_ids[0]} is in ${local.availability_zones[0]}: both interfaces of an instance are in one availability zone."
    }
  }
}

resource "aws_eip" "egress" {
  #checkov:skip=CKV2_AWS_19: the address is attached to the instance's primary network interface by aws_eip_association.egress below, which this check does not follow.
  count  = local.egress ? 1 : 0
  domain = "vpc"
  tags   = local.tags
}

resource "aws_eip_association" "egress" {
  count                = local.egress ? 1 : 0
  allocation_id        = aws_eip.egress[0].id
  network_interface_id = aws_network_interface.primary[0].id
}

data "aws_nat_gateway" "egress" {
  count = local.egress ? 1 : 0
  id    = local.egress_nat_gateway

  lifecycle {
    precondition {
      condition     = local.egress_nat_gateway != ""
      error_message = "egress_subnet_ids ${coalesce(local.egress_subnet_id, "-")}: its route table ${local.egress ? data.aws_route_table.egress[0].id : "-"} sends 0.0.0.0/0 to ${local.egress_default_route == null ? "nothing (no default route)" : coalesce(local.egress_default_route.gateway_id, local.egress_default_route.network_interface_id, local.egress_default_route.transit_gateway_id, "something other than a NAT gateway")}; expected a NAT gateway (nat-...), whose address third parties would see."
    }
  }
}

# ---------------------------------------------------------------------------
# Launch template and instances.

# Non-secret appliance config (docs/reference/appliance.md), rendered by
# the pure user-data module so that tests can check it with
# `appliance check-config`: the auth key itself is fetched at boot from
# Secrets Manager with the instance role.
module "user_data" {
  source = "./modules/user-data"

  role                     = var.role
  control_url              = var.control_url
  control_public_key       = var.control_public_key
  auth_key_secret          = local.has_secret ? local.auth_key_secret : null
  secrets_manager_endpoint = var.secrets_manager_endpoint
  state_volume             = local.is_control ? aws_ebs_volume.control_state[0].id : null
  routes                   = local.routes
  snat                     = var.snat
  aws_route_tables         = local.moves_return_route ? var.route_table_ids : []
  egress_mac               = local.egress ? aws_network_interface.egress[0].mac_address : null
  app_connector_domains    = var.app_connector_domains
  site_id                  = var.site_id
  recorder = var.recorder == null ? null : {
    bucket = var.recorder.bucket
    region = coalesce(var.recorder.region, data.aws_region.current.name)
    allow  = var.recorder.allow
    ui     = var.recorder.ui
  }
}

locals {
  user_data = module.user_data.text
}

resource "aws_launch_template" "this" {
  name                   = local.base_name
  description            = "Causeway ${var.role} appliance"
  image_id               = local.image.id
  instance_type          = local.instance_type
  update_default_version = true
  ebs_optimized          = true
  user_data              = base64encode(local.user_data)
  # No key_name: no SSH key pair. Administration goes through the mesh.

  iam_instance_profile {
    arn = aws_iam_instance_profile.this.arn
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  block_device_mappings {
    device_name = local.image.root_device_name
    ebs {
      volume_type           = "gp3"
      volume_size           = local.root_volume_size
      encrypted             = true
      kms_key_id            = var.root_volume_kms_key_id
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = true
  }

  dynamic "tag_specifications" {
    for_each = toset(["instance", "volume", "network-interface"])
    content {
      resource_type = tag_specifications.key
      tags          = local.tags
    }
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = local.instance_type_problem == ""
      error_message = local.instance_type_problem
    }
    precondition {
      condition     = !var.ha || length(distinct(local.availability_zones)) == 2
      error_message = "ha = true needs two subnets in distinct availability zones; got ${join(", ", local.availability_zones)}."
    }
    precondition {
      condition     = length(var.subnet_ids) == local.instance_count
      error_message = "subnet_ids must hold exactly ${local.instance_count} subnet(s) for ha = ${var.ha}."
    }
  }
}

resource "aws_instance" "this" {
  #checkov:skip=CKV_AWS_8: the encrypted gp3 root volume is in the launch template (aws_launch_template.this), which checkov does not follow.
  #checkov:skip=CKV_AWS_135: ebs_optimized is set in the launch template, which checkov does not follow.
  #checkov:skip=CKV_AWS_126: detailed monitoring is enabled in the launch template, which checkov does not follow.
  #checkov:skip=CKV2_AWS_41: the instance profile (role causeway-NAME-ROLE) is in the launch template, which checkov does not follow.
  #checkov:skip=CKV_AWS_88: a public address is what lets peers reach a mesh node directly (docs/aws.md); its security group admits only the one listening port. Set associate_public_ip_address = false behind a NAT gateway.
  count = local.instance_count

  launch_template {
    id      = aws_launch_template.this.id
    version = aws_launch_template.this.latest_version
  }

  # Subnet and security group at the top level of RunInstances, as the
  # contract says (moto ignores those inside a template); with an egress
  # subnet, on the two interfaces made above instead.
  subnet_id                   = local.egress ? null : var.subnet_ids[count.index]
  vpc_security_group_ids      = local.egress ? null : [aws_security_group.this.id]
  source_dest_check           = local.egress ? null : local.source_dest_check
  associate_public_ip_address = local.egress ? null : var.associate_public_ip_address

  dynamic "network_interface" {
    for_each = local.egress ? [aws_network_interface.primary[0].id, aws_network_interface.egress[0].id] : []
    content {
      device_index         = network_interface.key
      network_interface_id = network_interface.value
    }
  }

  # Repeated from the template so that drift on the instance is visible.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  tags = merge(local.tags, { Name = local.instance_names[count.index] })
}

resource "aws_route" "tailnet" {
  count = var.snat ? 0 : length(var.route_table_ids)

  route_table_id         = var.route_table_ids[count.index]
  destination_cidr_block = local.tailnet_cidr
  network_interface_id   = aws_instance.this[0].primary_network_interface_id

  # Created pointing at instance 0 so traffic flows before control picks
  # a primary; from then on the primary appliance points it at itself.
  lifecycle {
    ignore_changes = [network_interface_id]
  }
}

# ---------------------------------------------------------------------------
# Role control: a stable address and state that outlive the instance. The
# Elastic IP follows the control instance (so control_url keeps working
# after a replacement), and control's database and keys live on their own
# encrypted volume in the instance's AZ, attached as /dev/sdf. The user data
# names the volume (state_volume), and the image mounts it as the
# appliance's state directory, /var/lib/causeway (control's state_dir),
# formatting it only when it is blank. Replacing the instance re-attaches
# both; only destroy removes them.

locals {
  is_control = var.role == "control"
}

resource "aws_eip" "control" {
  count  = local.is_control ? 1 : 0
  domain = "vpc"
  tags   = local.tags
}

resource "aws_eip_association" "control" {
  count         = local.is_control ? 1 : 0
  allocation_id = aws_eip.control[0].id
  instance_id   = aws_instance.this[0].id
}

resource "aws_ebs_volume" "control_state" {
  #checkov:skip=CKV_AWS_189: encrypted with the account's EBS default key unless state_volume_kms_key_id names one, like the root volume.
  count             = local.is_control ? 1 : 0
  availability_zone = local.availability_zones[0]
  size              = var.state_volume_size
  type              = "gp3"
  encrypted         = true
  kms_key_id        = var.state_volume_kms_key_id
  tags              = merge(local.tags, { Name = "${local.base_name}-state" })
}

resource "aws_volume_attachment" "control_state" {
  count       = local.is_control ? 1 : 0
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.control_state[0].id
  instance_id = aws_instance.this[0].id
}
