# The recordings bucket of role `recorder` as docs/reference/aws-contract.md
# describes it, and the recorder's minimal IAM policy.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

locals {
  bucket_name = coalesce(var.bucket_name, "causeway-${var.name}-recordings-${data.aws_caller_identity.current.account_id}")
  tags = merge(var.tags, {
    "causeway:deployment" = var.name
    "causeway:role"       = "recorder"
    Name                  = "causeway-${var.name}-recordings"
  })
}

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_21: recordings are written once under unique keys and expire by lifecycle; versioning would keep expired recordings as noncurrent versions.
  #checkov:skip=CKV_AWS_144: cross-region replication is a deployment choice outside the contract (and doubles the storage of every recording).
  #checkov:skip=CKV_AWS_18: access logging needs a separate log bucket, which the contract does not create; enable CloudTrail data events or pass a logging bucket outside this module.
  #checkov:skip=CKV2_AWS_62: nothing consumes bucket events; the recorder writes and the UI reads.
  #checkov:skip=CKV_AWS_145: the contract's default is SSE-S3 (AES256); kms_key_arn switches to SSE-KMS.
  bucket        = local.bucket_name
  force_destroy = var.force_destroy
  tags          = local.tags
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

data "aws_iam_policy_document" "tls_only" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.this.arn,
      "${aws_s3_bucket.this.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "tls_only" {
  bucket = aws_s3_bucket.this.id
  policy = data.aws_iam_policy_document.tls_only.json

  # A bucket policy put before the public access block can be refused.
  depends_on = [aws_s3_bucket_public_access_block.this]
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    id     = "causeway-recordings"
    status = "Enabled"

    filter {}

    transition {
      days          = var.ia_days
      storage_class = "STANDARD_IA"
    }
    transition {
      days          = var.archive_days
      storage_class = "GLACIER"
    }
    expiration {
      days = var.expire_days
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }
}

# ---------------------------------------------------------------------------
# What the recorder may do: write recordings (and abort the multipart
# uploads it gives up on), read them back only for the web UI, and use the
# bucket's KMS key when there is one.

module "policy" {
  source = "./modules/policy"

  bucket_arn  = aws_s3_bucket.this.arn
  kms_key_arn = var.kms_key_arn
  ui          = var.recorder_ui
}

resource "aws_iam_role_policy" "recorder" {
  count  = var.recorder_role_name == null ? 0 : 1
  name   = module.policy.name
  role   = var.recorder_role_name
  policy = module.policy.json
}
