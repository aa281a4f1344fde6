# A recorder appliance and its recordings bucket (lifecycle days set explicitly, web UI on).

provider "aws" {
  region = var.region
}

locals {
  tags = {
    "causeway:deployment" = var.name
    "causeway:role"       = "recorder"
  }
}

module "vpc" {
  source = "../shared/public-vpc"

  name = var.name
  cidr = var.vpc_cidr
  tags = local.tags
}

# ---------------------------------------------------------------------------
# The recorder and its bucket.

module "recorder" {
  source = "../../modules/appliance"

  name               = var.name
  role               = "recorder"
  vpc_id             = module.vpc.vpc_id
  subnet_ids         = [module.vpc.public_subnet_ids[0]]
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
