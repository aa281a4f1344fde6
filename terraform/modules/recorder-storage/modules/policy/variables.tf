variable "bucket_arn" {
  description = "Required. ARN of the recordings bucket."
  type        = string
}

variable "kms_key_arn" {
  description = "Optional. The bucket's SSE-KMS key: the recorder may then use it."
  type        = string
  default     = null
}

variable "ui" {
  description = "Optional. The recorder's web UI is on: it may read and list recordings."
  type        = bool
  default     = false
}
