# The VPC the examples deploy into: two public subnets in the region's first
# two available zones (a default route to an internet gateway), so peers
# reach the appliances directly rather than through relays, and the VPC's
# default security group closed. A fixture for the examples, not a product
# module: a real deployment brings its own VPC.

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394: the example takes the first two available zones of whatever region it runs in; a real deployment passes its own subnets.
  state = "available"
}

locals {
  azs = slice(data.aws_availability_zones.available.names, 0, 2)
}

resource "aws_vpc" "this" {
  #checkov:skip=CKV2_AWS_11: flow logs need a log group or bucket and a role; the example VPC exists to exercise the modules.
  cidr_block           = var.cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(var.tags, { Name = "causeway-${var.name}-vpc" })
}

resource "aws_default_security_group" "this" {
  # Closes the VPC's default security group (no rules at all).
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "causeway-${var.name}-default" })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "causeway-${var.name}-igw" })
}

resource "aws_subnet" "public" {
  count = 2

  vpc_id            = aws_vpc.this.id
  availability_zone = local.azs[count.index]
  cidr_block        = cidrsubnet(var.cidr, 8, count.index)
  # Public addresses come from the instances' own launch, not by default.
  map_public_ip_on_launch = false
  tags                    = merge(var.tags, { Name = "causeway-${var.name}-public-${count.index}" })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "causeway-${var.name}-public" })
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
