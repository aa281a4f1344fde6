# Two recorder appliances (size small) in two AZs sharing one recordings
# bucket (lifecycle days set explicitly, web UI on). SSH servers list both
# (`appliance record --recorder http://A,http://B`) and fail over between them.

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
# The recorders and their bucket.

module "recorder" {
  source = "../../modules/appliance"

  name               = var.name
  role               = "recorder"
  vpc_id             = module.vpc.vpc_id
  subnet_ids         = module.vpc.public_subnet_ids
  ha                 = true
  size               = "small"
  control_url        = var.control_url
  control_public_key = var.control_public_key
  auth_key           = var.auth_key

  # The [recorder] section of its config: the bucket below; recordings from
  # the whole tailnet (the default allow-list); the UI as asked.
  recorder = {
    bucket = module.recordings.bucket_name
    ui     = var.recorder_ui
  }

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
