# Split DNS for a VPC as docs/reference/aws-contract.md describes it: which
# resolver the tailnet asks for the VPC's private zones.

data "aws_vpc" "this" {
  id = var.vpc_id
}

locals {
  endpoint = var.mode == "resolver-endpoint"
  tags = merge(var.tags, {
    "causeway:deployment" = var.name
    "causeway:role"       = var.role
    Name                  = "causeway-${var.name}-dns"
  })

  # Queries arrive from the VPC itself and, through a subnet router that
  # keeps source addresses, from the tailnet's CGNAT range.
  # Static keys: the VPC's CIDR may be unknown until apply.
  dns_sources = { vpc = data.aws_vpc.this.cidr_block, tailnet = "100.64.0.0/10" }
  dns_rules = {
    for pair in setproduct(["tcp", "udp"], keys(local.dns_sources)) :
    "${pair[0]}-${pair[1]}" => { protocol = pair[0], cidr = local.dns_sources[pair[1]] }
  }
}

data "aws_subnet" "endpoint" {
  count = local.endpoint ? length(var.subnet_ids) : 0
  id    = var.subnet_ids[count.index]
}

resource "aws_security_group" "dns" {
  count = local.endpoint ? 1 : 0

  name        = "causeway-${var.name}-dns"
  description = "Causeway split DNS: TCP and UDP 53 from the VPC and the tailnet"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "dns" {
  for_each = local.endpoint ? local.dns_rules : {}

  security_group_id = aws_security_group.dns[0].id
  description       = "DNS over ${upper(each.value.protocol)}"
  ip_protocol       = each.value.protocol
  from_port         = 53
  to_port           = 53
  cidr_ipv4         = each.value.cidr
  tags              = local.tags
}

resource "aws_route53_resolver_endpoint" "inbound" {
  count = local.endpoint ? 1 : 0

  name               = "causeway-${var.name}-dns"
  direction          = "INBOUND"
  security_group_ids = [aws_security_group.dns[0].id]

  dynamic "ip_address" {
    for_each = var.subnet_ids
    content {
      subnet_id = ip_address.value
    }
  }

  tags = local.tags

  lifecycle {
    precondition {
      condition     = length(distinct(data.aws_subnet.endpoint[*].availability_zone)) == 2
      error_message = "The resolver endpoint's two subnets must be in distinct availability zones; got ${join(", ", data.aws_subnet.endpoint[*].availability_zone)}."
    }
  }
}

data "aws_route53_zone" "private" {
  count   = length(var.private_zone_ids)
  zone_id = var.private_zone_ids[count.index]
}

locals {
  resolver_ips = local.endpoint ? sort([for a in aws_route53_resolver_endpoint.inbound[0].ip_address : a.ip]) : [cidrhost(data.aws_vpc.this.cidr_block, 2)]
  zone_names   = sort([for z in data.aws_route53_zone.private : trimsuffix(z.name, ".")])
}
