# An HA subnet-router pair in two AZs of a new VPC, with split DNS through a
# Route 53 Resolver inbound endpoint for a private zone.

provider "aws" {
  region = var.region
}

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394: the example takes the first two available zones of whatever region it runs in; a real deployment passes its own subnets.
  state = "available"
}

locals {
  azs = slice(data.aws_availability_zones.available.names, 0, 2)
  tags = {
    "causeway:deployment" = var.name
    "causeway:role"       = "subnet-router"
  }
}

# ---------------------------------------------------------------------------
# The VPC: two public subnets (a default route to an internet gateway), so
# peers can reach the routers directly rather than through relays.

resource "aws_vpc" "this" {
  #checkov:skip=CKV2_AWS_11: flow logs need a log group or bucket and a role; the example VPC exists to exercise the modules.
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = "causeway-${var.name}-vpc" })
}

resource "aws_default_security_group" "this" {
  # Closes the VPC's default security group (no rules at all).
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "causeway-${var.name}-default" })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "causeway-${var.name}-igw" })
}

resource "aws_subnet" "public" {
  count = 2

  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.vpc_cidr, 8, count.index)
  # Public addresses come from the instances' own launch, not by default.
  map_public_ip_on_launch = false
  tags                    = merge(local.tags, { Name = "causeway-${var.name}-public-${count.index}" })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = "causeway-${var.name}-public" })
}

resource "aws_route" "internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  count          = 2
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

resource "aws_route53_zone" "internal" {
  name = "internal.${var.name}.example"
  vpc {
    vpc_id = aws_vpc.this.id
  }
  tags = merge(local.tags, { Name = "causeway-${var.name}-internal" })
}

# ---------------------------------------------------------------------------
# The routers and split DNS.

module "router" {
  source = "../../modules/appliance"

  name               = var.name
  role               = "subnet-router"
  vpc_id             = aws_vpc.this.id
  subnet_ids         = aws_subnet.public[*].id
  ha                 = true
  control_url        = var.control_url
  control_public_key = var.control_public_key
  auth_key           = var.auth_key
  snat               = var.snat
  route_table_ids    = [aws_route_table.public.id]
  # Advertise the VPC itself (the default would read its CIDR back).
  routes = [var.vpc_cidr]

  secret_recovery_window_in_days = 0
}

module "dns" {
  source = "../../modules/split-dns"

  name             = var.name
  vpc_id           = aws_vpc.this.id
  mode             = "resolver-endpoint"
  subnet_ids       = aws_subnet.public[*].id
  private_zone_ids = [aws_route53_zone.internal.zone_id]
}
