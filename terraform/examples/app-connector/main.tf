# An app connector in a new VPC: it routes the addresses the given domains
# resolve to. Control sends the tailnet's queries for those domains to it
# (split DNS), it asks the VPC's resolver, and the addresses in the answers
# become routes it advertises and forwards to, masqueraded to its own
# (public) address, so the apps see the connector's address.
#
# Control approves those routes through its policy, for example
#   "autoApprovers": {"routes": {"0.0.0.0/0": ["tag:app-connector"],
#                                "::/0": ["tag:app-connector"]}}
# (a public prefix inside a named one is approved for a connector; 0.0.0.0/0
# itself is never approved this way), or an admin approves each.

provider "aws" {
  region = var.region
}

locals {
  tags = {
    "causeway:deployment" = var.name
    "causeway:role"       = "app-connector"
  }
}

module "vpc" {
  source = "../shared/public-vpc"

  name = var.name
  cidr = var.vpc_cidr
  tags = local.tags
}

module "app_connector" {
  source = "../../modules/appliance"

  name                  = var.name
  role                  = "app-connector"
  vpc_id                = module.vpc.vpc_id
  subnet_ids            = [module.vpc.public_subnet_ids[0]]
  app_connector_domains = var.domains
  control_url           = var.control_url
  control_public_key    = var.control_public_key
  auth_key              = var.auth_key
  # A connector forwards little next to a router: the small tier.
  size = "small"

  secret_recovery_window_in_days = 0
}
