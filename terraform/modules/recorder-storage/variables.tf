variable "name" {
  description = "Required. Deployment name: 1-24 of a-z, 0-9 and '-', starting with a letter. Tagged on everything as causeway:deployment."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,23}$", var.name))
    error_message = "name must be 1-24 characters of a-z, 0-9 and '-', starting with a letter."
  }
}

variable "bucket_name" {
  description = "Optional. Bucket name. Default: causeway-NAME-recordings-ACCOUNT."
  type        = string
  default     = null
}

variable "kms_key_arn" {
  description = "Optional. KMS key for default encryption (SSE-KMS with a bucket key). Default: SSE-S3 (AES256). With a key, the recorder policy also gets kms:GenerateDataKey and kms:Decrypt on it (Decrypt completes multipart uploads)."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:[a-z-]+:kms:[a-z0-9-]+:[0-9]{12}:key/[^/]+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN, arn:aws:kms:REGION:ACCOUNT:key/KEY-ID (not an alias or a bare key ID: the recorder's policy grants the key by ARN)."
  }
}

variable "ia_days" {
  description = "Optional. Days after which recordings move to STANDARD_IA (S3 requires at least 30)."
  type        = number
  default     = 30
}

variable "archive_days" {
  description = "Optional. Days after which recordings move to GLACIER; more than ia_days."
  type        = number
  default     = 90

  validation {
    condition     = var.archive_days > var.ia_days
    error_message = "archive_days must be greater than ia_days."
  }
}

variable "expire_days" {
  description = "Optional. Days after which recordings are deleted; more than archive_days."
  type        = number
  default     = 365

  validation {
    condition     = var.expire_days > var.archive_days
    error_message = "expire_days must be greater than archive_days."
  }
}

variable "abort_incomplete_multipart_days" {
  description = "Optional. Days after which incomplete multipart uploads are aborted."
  type        = number
  default     = 7
}

variable "recorder_ui" {
  description = "Optional. The recorder's web UI is on: the recorder policy adds s3:GetObject and s3:ListBucket."
  type        = bool
  default     = false
}

variable "recorder_role_name" {
  description = "Optional. IAM role (the recorder appliance's instance role) that gets the recorder policy inline as causeway-recordings. Null: only output the policy (recorder_policy_json)."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Optional. Let destroy delete a bucket that still holds recordings."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Optional. Extra tags on every resource; the causeway:* and Name tags win."
  type        = map(string)
  default     = {}
}
