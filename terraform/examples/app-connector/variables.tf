variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Deployment name (causeway:deployment)."
  type        = string
  default     = "connector-example"
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
  description = "Auth key for the app connector (tag:app-connector), e.g. from `appliance admin keys create --reusable --tag tag:app-connector --expiry 1h` (revoke it once the connector joined). Kept out of state."
  type        = string
  sensitive   = true
  ephemeral   = true
}

variable "domains" {
  description = "The domains the connector routes: app.example.com (that name) or *.example.com (every name below it)."
  type        = list(string)
  default     = ["app.example.com", "*.example.net"]
}

variable "vpc_cidr" {
  description = "CIDR of the example VPC."
  type        = string
  default     = "10.45.0.0/16"
}
