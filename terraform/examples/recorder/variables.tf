variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Deployment name (causeway:deployment)."
  type        = string
  default     = "rec-example"
}

variable "control_url" {
  description = "Control's node-facing URL."
  type        = string
}

variable "control_public_key" {
  description = "Control's public key (base64)."
  type        = string
}

variable "auth_key" {
  description = "Auth key for the recorder (tag:recorder), e.g. from `appliance admin keys create --reusable --tag tag:recorder --expiry 1h` (revoke it once the recorder joined). Kept out of state."
  type        = string
  sensitive   = true
  ephemeral   = true
}

variable "vpc_cidr" {
  description = "CIDR of the example VPC."
  type        = string
  default     = "10.44.0.0/16"
}

variable "recorder_ui" {
  description = "The recorder's web UI is on (its policy may read recordings back)."
  type        = bool
  default     = true
}

variable "ia_days" {
  description = "Days until recordings move to STANDARD_IA."
  type        = number
  default     = 45
}

variable "archive_days" {
  description = "Days until recordings move to GLACIER."
  type        = number
  default     = 120
}

variable "expire_days" {
  description = "Days until recordings are deleted."
  type        = number
  default     = 400
}
