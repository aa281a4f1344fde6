output "bucket_name" {
  description = "Name of the recordings bucket."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "ARN of the recordings bucket."
  value       = aws_s3_bucket.this.arn
}

output "bucket_region" {
  description = "Region of the recordings bucket."
  value       = aws_s3_bucket.this.region
}

output "recorder_policy_json" {
  description = "The recorder's minimal IAM policy (PutObject, AbortMultipartUpload and GetBucketLocation; GetObject and ListBucket with the UI; kms:GenerateDataKey and kms:Decrypt on kms_key_arn)."
  value       = module.policy.json
}

output "lifecycle_rule" {
  description = "The lifecycle rule causeway-recordings as configured."
  value = {
    id                              = "causeway-recordings"
    ia_days                         = var.ia_days
    archive_days                    = var.archive_days
    expire_days                     = var.expire_days
    abort_incomplete_multipart_days = var.abort_incomplete_multipart_days
  }
}
