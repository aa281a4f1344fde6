# An exit node in a new VPC whose forwarded internet traffic leaves through
# a NAT gateway: the exit node keeps a public interface (an Elastic IP) for
# WireGuard, so peers connect to it directly, and gets a second interface in
# a private subnet whose default route is the NAT gateway, so the sites
# tailnet users reach see the NAT gateway's address, which they can
# allow-list.

provider "aws" {
  region = var.region
}

locals {
  tags = {
    "causeway:deployment" = var.name
    "causeway:role"       = "exit-node"
  }
}

module "vpc" {
  source = "../shared/public-vpc"

  name = var.name
  cidr = var.vpc_cidr
  tags = local.tags
}

# ---------------------------------------------------------------------------
# The egress path: a NAT gateway in the first public subnet, and a private
# subnet in the same availability zone that routes 0.0.0.0/0 to it.

data "aws_subnet" "first_public" {
  id = module.vpc.public_subnet_ids[0]
}

resource "aws_eip" "nat" {
  domain = "vpc"
  tags   = merge(local.tags, { Name = "causeway-${var.name}-nat" })
}

resource "aws_nat_gateway" "this" {
  allocation_id = aws_eip.nat.id
  subnet_id     = module.vpc.public_subnet_ids[0]
  tags          = merge(local.tags, { Name = "causeway-${var.name}-nat" })
}

resource "aws_subnet" "egress" {
  vpc_id            = module.vpc.vpc_id
  availability_zone = data.aws_subnet.first_public.availability_zone
  cidr_block        = cidrsubnet(var.vpc_cidr, 8, 10)
  tags              = merge(local.tags, { Name = "causeway-${var.name}-egress" })
}

resource "aws_route_table" "egress" {
  vpc_id = module.vpc.vpc_id
  tags   = merge(local.tags, { Name = "causeway-${var.name}-egress" })
}

resource "aws_route" "egress_default" {
  route_table_id         = aws_route_table.egress.id
  destination_cidr_block = "0.0.0.0/0"
  nat_gateway_id         = aws_nat_gateway.this.id
}

resource "aws_route_table_association" "egress" {
  subnet_id      = aws_subnet.egress.id
  route_table_id = aws_route_table.egress.id

  depends_on = [aws_route.egress_default]
}

# ---------------------------------------------------------------------------
# The exit node.

module "exit_node" {
  source = "../../modules/appliance"

  name       = var.name
  role       = "exit-node"
  vpc_id     = module.vpc.vpc_id
  subnet_ids = [module.vpc.public_subnet_ids[0]]
  # Through the association: the module reads the subnet's route table,
  # which must hold the route to the NAT gateway by then.
  egress_subnet_ids  = [aws_route_table_association.egress.subnet_id]
  control_url        = var.control_url
  control_public_key = var.control_public_key
  auth_key           = var.auth_key

  secret_recovery_window_in_days = 0
}
