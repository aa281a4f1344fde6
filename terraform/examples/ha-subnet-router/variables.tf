variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Deployment name (causeway:deployment)."
  type        = string
  default     = "ha-example"
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
  description = "Auth key for the routers (tag:subnet-router), e.g. from `appliance admin keys create --reusable --tag tag:subnet-router --expiry 1h` (revoke it once the routers joined). Kept out of state."
  type        = string
  sensitive   = true
  ephemeral   = true
}

variable "snat" {
  description = "Masquerade tailnet sources. The example keeps them (false): the public route table gets 100.64.0.0/10 via router 0, which the primary router then points at itself."
  type        = bool
  default     = false
}

variable "vpc_cidr" {
  description = "CIDR of the example VPC."
  type        = string
  default     = "10.42.0.0/16"
}
