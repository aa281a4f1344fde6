# Logic of the recordings bucket against a mocked AWS provider.

mock_provider "aws" {
  mock_data "aws_caller_identity" {
    defaults = {
      account_id = "123456789012"
    }
  }
  # The provider validates policy JSON even when mocked; the statements are
  # asserted on the data sources' arguments instead.
  mock_data "aws_iam_policy_document" {
    defaults = {
      json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
    }
  }
  mock_resource "aws_s3_bucket" {
    defaults = {
      arn = "arn:aws:s3:::causeway-t1-recordings-123456789012"
    }
  }
}

variables {
  name               = "t1"
  recorder_role_name = "causeway-t1-recorder"
}

run "defaults_per_contract" {
  command = apply

  assert {
    condition     = aws_s3_bucket.this.bucket == "causeway-t1-recordings-123456789012"
    error_message = "bucket named causeway-NAME-recordings-ACCOUNT"
  }
  assert {
    condition     = aws_s3_bucket_public_access_block.this.block_public_acls && aws_s3_bucket_public_access_block.this.block_public_policy && aws_s3_bucket_public_access_block.this.ignore_public_acls && aws_s3_bucket_public_access_block.this.restrict_public_buckets
    error_message = "all four public access blocks on"
  }
  assert {
    condition     = one([for r in aws_s3_bucket_server_side_encryption_configuration.this.rule : one(r.apply_server_side_encryption_by_default).sse_algorithm]) == "AES256"
    error_message = "SSE-S3 by default"
  }
  assert {
    condition     = length(aws_s3_bucket_lifecycle_configuration.this.rule) == 1 && aws_s3_bucket_lifecycle_configuration.this.rule[0].id == "causeway-recordings" && aws_s3_bucket_lifecycle_configuration.this.rule[0].status == "Enabled"
    error_message = "one enabled rule causeway-recordings"
  }
  assert {
    condition     = toset([for t in aws_s3_bucket_lifecycle_configuration.this.rule[0].transition : "${t.storage_class}@${t.days}"]) == toset(["STANDARD_IA@30", "GLACIER@90"])
    error_message = "STANDARD_IA after 30 days, GLACIER after 90"
  }
  assert {
    condition     = aws_s3_bucket_lifecycle_configuration.this.rule[0].expiration[0].days == 365 && aws_s3_bucket_lifecycle_configuration.this.rule[0].abort_incomplete_multipart_upload[0].days_after_initiation == 7
    error_message = "expire after 365 days, abort incomplete uploads after 7"
  }
  assert {
    condition = anytrue([for s in data.aws_iam_policy_document.tls_only.statement :
      s.effect == "Deny" && s.actions == toset(["s3:*"]) &&
    anytrue([for c in s.condition : c.test == "Bool" && c.variable == "aws:SecureTransport" && c.values == tolist(["false"])])])
    error_message = "the bucket policy denies aws:SecureTransport = false"
  }
  assert {
    condition = toset([for s in module.policy.statements : "${join(",", flatten([s.Action]))} on ${s.Resource}"]) == toset([
      "s3:AbortMultipartUpload,s3:PutObject on arn:aws:s3:::causeway-t1-recordings-123456789012/*",
      "s3:GetBucketLocation on arn:aws:s3:::causeway-t1-recordings-123456789012",
    ])
    error_message = "without the UI the recorder may only PutObject, AbortMultipartUpload and GetBucketLocation"
  }
  assert {
    condition     = aws_iam_role_policy.recorder[0].role == "causeway-t1-recorder" && aws_iam_role_policy.recorder[0].name == "causeway-recordings"
    error_message = "the policy goes inline on the recorder's role"
  }
  assert {
    condition     = aws_s3_bucket.this.tags["causeway:deployment"] == "t1" && aws_s3_bucket.this.tags["causeway:role"] == "recorder"
    error_message = "bucket tagged per contract"
  }
}

run "configured_days_and_ui" {
  command = apply

  variables {
    ia_days                         = 45
    archive_days                    = 120
    expire_days                     = 400
    abort_incomplete_multipart_days = 3
    recorder_ui                     = true
  }

  assert {
    condition     = toset([for t in aws_s3_bucket_lifecycle_configuration.this.rule[0].transition : "${t.storage_class}@${t.days}"]) == toset(["STANDARD_IA@45", "GLACIER@120"])
    error_message = "transitions follow the configured days"
  }
  assert {
    condition     = aws_s3_bucket_lifecycle_configuration.this.rule[0].expiration[0].days == 400 && aws_s3_bucket_lifecycle_configuration.this.rule[0].abort_incomplete_multipart_upload[0].days_after_initiation == 3
    error_message = "expiry and abort follow the configured days"
  }
  assert {
    condition = toset([for s in module.policy.statements : "${join(",", flatten([s.Action]))} on ${s.Resource}"]) == toset([
      "s3:AbortMultipartUpload,s3:PutObject on arn:aws:s3:::causeway-t1-recordings-123456789012/*",
      "s3:GetBucketLocation on arn:aws:s3:::causeway-t1-recordings-123456789012",
      "s3:GetObject on arn:aws:s3:::causeway-t1-recordings-123456789012/*",
      "s3:ListBucket on arn:aws:s3:::causeway-t1-recordings-123456789012",
    ])
    error_message = "with the UI the recorder may also GetObject and ListBucket, nothing else"
  }
}

run "kms_key" {
  command = plan

  variables {
    kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
  }

  assert {
    condition     = one([for r in aws_s3_bucket_server_side_encryption_configuration.this.rule : one(r.apply_server_side_encryption_by_default).sse_algorithm]) == "aws:kms"
    error_message = "a KMS key switches to SSE-KMS"
  }
  assert {
    condition = anytrue([for s in module.policy.statements : s.Sid == "UseRecordingsKey" && s.Resource == "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555" &&
    toset(flatten([s.Action])) == toset(["kms:Decrypt", "kms:GenerateDataKey"])])
    error_message = "with a KMS key the recorder may GenerateDataKey and Decrypt with that key, even without the UI"
  }
}

run "kms_alias_refused" {
  command = plan

  variables {
    kms_key_arn = "alias/recordings"
  }

  expect_failures = [var.kms_key_arn]
}

run "days_must_increase" {
  command = plan

  variables {
    ia_days      = 60
    archive_days = 60
  }

  expect_failures = [var.archive_days]
}

run "no_role_no_attachment" {
  command = plan

  variables {
    recorder_role_name = null
    bucket_name        = "my-recordings"
  }

  assert {
    condition     = length(aws_iam_role_policy.recorder) == 0 && aws_s3_bucket.this.bucket == "my-recordings"
    error_message = "without a role only the policy JSON is output; bucket_name overrides the name"
  }
}
