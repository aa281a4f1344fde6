variable "role" {
  description = "Required. A role the appliance runs: subnet-router, via6, exit-node, app-connector, recorder or control."
  type        = string

  validation {
    condition     = contains(["subnet-router", "via6", "exit-node", "app-connector", "recorder", "control"], var.role)
    error_message = "role must be subnet-router, via6, exit-node, app-connector, recorder or control (the roles the appliance runs today)."
  }
}

variable "site_id" {
  description = "Role via6 only (required there): the 4via6 site ID, 0 to 65535, written on every route."
  type        = number
  default     = null

  validation {
    condition     = (var.site_id != null) == (var.role == "via6")
    error_message = "site_id is required for role via6, and only for it."
  }
  validation {
    condition     = var.site_id == null || try(var.site_id >= 0 && var.site_id <= 65535 && floor(var.site_id) == var.site_id, false)
    error_message = "site_id: expected a whole number from 0 to 65535."
  }
}

variable "control_url" {
  description = "Required. Control's node-facing URL (unused for role control)."
  type        = string
}

variable "control_public_key" {
  description = "Required. Control's public key (base64), pinned (unused for role control)."
  type        = string
}

variable "auth_key_secret" {
  description = "Optional. ARN of the Secrets Manager secret holding the auth key (never the key)."
  type        = string
  default     = null
}

variable "secrets_manager_endpoint" {
  description = "Optional. The Secrets Manager endpoint URL the auth key is read from (a VPC interface endpoint without private DNS, a FIPS endpoint); null: the region's."
  type        = string
  default     = null
}

variable "routes" {
  description = "Optional. Prefixes a subnet router advertises."
  type        = list(string)
  default     = []
}

variable "snat" {
  description = "Optional. Masquerade tailnet sources."
  type        = bool
  default     = true
}

variable "aws_route_tables" {
  description = "Optional. Subnet router without SNAT: the VPC route tables whose 100.64.0.0/10 route the HA primary points at its own network interface."
  type        = list(string)
  default     = []
}

variable "recorder" {
  description = "Role recorder only (required there): bucket and region of the recordings, networks allowed to send them, and whether the web UI is on."
  type = object({
    bucket = string
    region = string
    allow  = list(string)
    ui     = bool
  })
  default = null

  validation {
    condition     = (var.recorder != null) == (var.role == "recorder")
    error_message = "recorder is required for role recorder, and only for it."
  }
}

variable "state_volume" {
  description = "Role control only (required there): the ID of the EBS volume that holds control's state (vol-...), which the image mounts before the appliance starts."
  type        = string
  default     = null

  validation {
    condition     = (var.state_volume != null) == (var.role == "control")
    error_message = "state_volume is required for role control, and only for it."
  }
}

variable "egress_mac" {
  description = "Optional. Role exit-node only: the MAC address of the egress interface forwarded internet traffic leaves through."
  type        = string
  default     = null

  validation {
    condition     = var.egress_mac == null || var.role == "exit-node"
    error_message = "egress_mac is for role exit-node only."
  }
}

variable "app_connector_domains" {
  description = "Role app-connector only (required there): the domains it routes."
  type        = list(string)
  default     = []

  validation {
    condition     = (length(var.app_connector_domains) > 0) == (var.role == "app-connector")
    error_message = "app_connector_domains is required for role app-connector, and only for it."
  }
}
