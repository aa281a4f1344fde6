variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Deployment name (causeway:deployment)."
  type        = string
  default     = "exit-example"
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
  description = "Auth key for the exit node (tag:exit-node), e.g. from `appliance admin keys create --reusable --tag tag:exit-node --expiry 1h` (revoke it once the exit node joined). Kept out of state."
  type        = string
  sensitive   = true
  ephemeral   = true
}

variable "vpc_cidr" {
  description = "CIDR of the example VPC."
  type        = string
  default     = "10.43.0.0/16"
}
