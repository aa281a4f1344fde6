# A 4via6 router in a new VPC: it serves the VPC's IPv4 range as site
# `site_id`. The appliance advertises the range as the site's IPv6 route in
# the tailnet's range (fd7a:…:b1a:0:SITE:…/(96 + the range's length)) and
# translates, so two VPCs that use the same range, each with its own site
# ID, are both reachable. Clients reach 10.47.0.5 at site 7 by its 4via6
# address, or by name as 10-47-0-5-via-7 (docs/dns.md).
#
# Control approves the route through its policy, by site and range:
#   "autoApprovers": {"routes": {"site:7:10.47.0.0/16": ["tag:via6"]}}
# or an admin approves the IPv6 prefix `appliance admin routes list` shows.

provider "aws" {
  region = var.region
}

locals {
  tags = {
    "causeway:deployment" = var.name
    "causeway:role"       = "via6"
  }
}

module "vpc" {
  source = "../shared/public-vpc"

  name = var.name
  cidr = var.vpc_cidr
  tags = local.tags
}

module "via6" {
  source = "../../modules/appliance"

  name               = var.name
  role               = "via6"
  site_id            = var.site_id
  vpc_id             = module.vpc.vpc_id
  subnet_ids         = [module.vpc.public_subnet_ids[0]]
  control_url        = var.control_url
  control_public_key = var.control_public_key
  auth_key           = var.auth_key
  # One site's router: the small tier.
  size = "small"

  secret_recovery_window_in_days = 0
}
