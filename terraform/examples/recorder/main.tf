# A recorder appliance and its recordings bucket (lifecycle days set explicitly, web UI on).

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
    "causeway:role"       = "recorder"
  }
}

# ---------------------------------------------------------------------------
# The VPC: two public subnets (a default route to an internet gateway), so
# peers can reach the recorder directly rather than through relays.

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

# ---------------------------------------------------------------------------
# The recorder and its bucket.

module "recorder" {
  source = "../../modules/appliance"

  name               = var.name
  role               = "recorder"
  vpc_id             = aws_vpc.this.id
  subnet_ids         = [aws_subnet.public[0].id]
  control_url        = var.control_url
  control_public_key = var.control_public_key
  auth_key           = var.auth_key

  secret_recovery_window_in_days = 0
}

module "recordings" {
  source = "../../modules/recorder-storage"

  name               = var.name
  recorder_role_name = module.recorder.iam_role_name
  recorder_ui        = var.recorder_ui
  ia_days            = var.ia_days
  archive_days       = var.archive_days
  expire_days        = var.expire_days
  # An example: let destroy remove recordings too.
  force_destroy = true
}
