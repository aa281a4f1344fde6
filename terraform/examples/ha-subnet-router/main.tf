# An HA subnet-router pair in two AZs of a new VPC, with split DNS through a
# Route 53 Resolver inbound endpoint for a private zone.

provider "aws" {
  region = var.region
}

locals {
  tags = {
    "causeway:deployment" = var.name
    "causeway:role"       = "subnet-router"
  }
}

module "vpc" {
  source = "../shared/public-vpc"

  name = var.name
  cidr = var.vpc_cidr
  tags = local.tags
}

resource "aws_route53_zone" "internal" {
  name = "internal.${var.name}.example"
  vpc {
    vpc_id = module.vpc.vpc_id
  }
  tags = merge(local.tags, { Name = "causeway-${var.name}-internal" })
}

# ---------------------------------------------------------------------------
# The routers and split DNS.

module "router" {
  source = "../../modules/appliance"

  name               = var.name
  role               = "subnet-router"
  vpc_id             = module.vpc.vpc_id
  subnet_ids         = module.vpc.public_subnet_ids
  ha                 = true
  control_url        = var.control_url
  control_public_key = var.control_public_key
  auth_key           = var.auth_key
  snat               = var.snat
  route_table_ids    = [module.vpc.public_route_table_id]
  # Advertise the VPC itself (the default would read its CIDR back).
  routes = [var.vpc_cidr]

  secret_recovery_window_in_days = 0
}

module "dns" {
  source = "../../modules/split-dns"

  name             = var.name
  vpc_id           = module.vpc.vpc_id
  mode             = "resolver-endpoint"
  subnet_ids       = module.vpc.public_subnet_ids
  private_zone_ids = [aws_route53_zone.internal.zone_id]
}
