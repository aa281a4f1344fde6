# An exit node in a new VPC: the smallest non-burstable arm64 type, SNAT on.

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
# The exit node: advertises the default routes and masquerades (snat = true,
# the default), so the VPC needs no return route.

module "exit_node" {
  source = "../../modules/appliance"

  name               = var.name
  role               = "exit-node"
  vpc_id             = module.vpc.vpc_id
  subnet_ids         = [module.vpc.public_subnet_ids[0]]
  size               = "small"
  control_url        = var.control_url
  control_public_key = var.control_public_key
  auth_key           = var.auth_key
  routes             = ["0.0.0.0/0", "::/0"]

  secret_recovery_window_in_days = 0
}
