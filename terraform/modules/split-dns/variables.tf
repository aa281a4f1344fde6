variable "name" {
  description = "Required. Deployment name: 1-24 of a-z, 0-9 and '-', starting with a letter. Tagged on everything as causeway:deployment."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,23}$", var.name))
    error_message = "name must be 1-24 characters of a-z, 0-9 and '-', starting with a letter."
  }
}

variable "role" {
  description = "Optional. The causeway:role tag of the DNS resources: the role of the appliance that routes to the resolver."
  type        = string
  default     = "subnet-router"
}

variable "vpc_id" {
  description = "Required. The VPC whose names the tailnet resolves."
  type        = string
}

variable "mode" {
  description = "Optional. vpc: the VPC resolver at the VPC CIDR's base + 2, reached through the subnet router. resolver-endpoint: a Route 53 Resolver inbound endpoint with one address in each of two subnets."
  type        = string
  default     = "vpc"

  validation {
    condition     = contains(["vpc", "resolver-endpoint"], var.mode)
    error_message = "mode must be vpc or resolver-endpoint."
  }
}

variable "subnet_ids" {
  description = "Optional. For mode resolver-endpoint: two subnets in distinct availability zones, one endpoint address in each."
  type        = list(string)
  default     = []

  validation {
    condition     = var.mode == "vpc" || length(var.subnet_ids) == 2
    error_message = "mode resolver-endpoint needs exactly two subnet_ids in distinct availability zones."
  }
}

variable "private_zone_ids" {
  description = "Optional. Route 53 private hosted zones already associated with the VPC whose names are registered in control as split-DNS domains."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Optional. Extra tags on every resource; the causeway:* and Name tags win."
  type        = map(string)
  default     = {}
}
