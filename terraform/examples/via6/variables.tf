variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Deployment name (causeway:deployment)."
  type        = string
  default     = "via6-example"
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
  description = "Auth key for the 4via6 router (tag:via6), e.g. from `appliance admin keys create --reusable --tag tag:via6 --expiry 1h` (revoke it once the router joined). Kept out of state."
  type        = string
  sensitive   = true
  ephemeral   = true
}

variable "site_id" {
  description = "The 4via6 site ID of this VPC, 0 to 65535: each VPC that uses the same range gets its own."
  type        = number
  default     = 7
}

variable "vpc_cidr" {
  description = "CIDR of the example VPC: the range the router serves at the site."
  type        = string
  default     = "10.47.0.0/16"
}
