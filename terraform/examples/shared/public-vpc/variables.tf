variable "name" {
  description = "Required. Deployment name, used in resource names."
  type        = string
}

variable "cidr" {
  description = "Required. The VPC's IPv4 CIDR; the two public subnets are its first two /(n+8)."
  type        = string
}

variable "tags" {
  description = "Optional. Tags for every resource."
  type        = map(string)
  default     = {}
}
