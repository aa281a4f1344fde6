variable "name" {
  description = "Required. Deployment name: 1-24 of a-z, 0-9 and '-', starting with a letter. Tagged on everything as causeway:deployment."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,23}$", var.name))
    error_message = "name must be 1-24 characters of a-z, 0-9 and '-', starting with a letter."
  }
}

variable "role" {
  description = "Required. Appliance role: subnet-router, via6, exit-node, app-connector, recorder or control. relay is refused: the appliance cannot run it yet."
  type        = string

  validation {
    condition     = var.role != "relay"
    error_message = "role ${var.role} is not built yet: the appliance cannot run it (no relay server yet); the roles this module deploys today are subnet-router, via6, exit-node, app-connector, recorder and control."
  }
  validation {
    condition     = contains(["subnet-router", "via6", "exit-node", "app-connector", "recorder", "control", "relay"], var.role)
    error_message = "role must be one of subnet-router, via6, exit-node, app-connector, recorder, control."
  }
}

variable "site_id" {
  description = "Role via6 only, and required there: the 4via6 site ID, 0 to 65535, written as site_id on every route. The appliance advertises each IPv4 route as the site's IPv6 route in the tailnet's range, so two VPCs with the same range are told apart; control's policy approves it as \"site:ID:CIDR\" in autoApprovers.routes."
  type        = number
  default     = null

  validation {
    condition     = (var.site_id != null) == (var.role == "via6")
    error_message = "Set site_id (0 to 65535) for role via6, and only for it: only a 4via6 router advertises its routes under a site ID."
  }
  validation {
    condition     = var.site_id == null || try(var.site_id >= 0 && var.site_id <= 65535 && floor(var.site_id) == var.site_id, false)
    error_message = "site_id: expected a whole number from 0 to 65535."
  }
}

variable "app_connector_domains" {
  description = "Role app-connector only, and required there: the domains it routes, \"app.example.com\" (that name) or \"*.example.com\" (every name below it), at most 1000. The addresses their DNS answers give become routes the connector advertises and forwards to, masqueraded."
  type        = list(string)
  default     = []

  validation {
    condition     = (length(var.app_connector_domains) > 0) == (var.role == "app-connector")
    error_message = "Set app_connector_domains (at least one domain) for role app-connector, and only for it: a connector without domains would boot a config the appliance refuses."
  }
  validation {
    condition     = length(var.app_connector_domains) <= 1000
    error_message = "app_connector_domains holds at most 1000 domains."
  }
  validation {
    # The appliance's check, in outline: a name of letters, digits, '-'
    # and '.', optionally under one leading "*." label, the wildcard over
    # at least two labels. `appliance check-config` is the full check.
    condition     = alltrue([for d in var.app_connector_domains : can(regex("^(\\*\\.[A-Za-z0-9_-]+\\.|)[A-Za-z0-9_-]+(\\.[A-Za-z0-9_-]+)*\\.?$", d))])
    error_message = "app_connector_domains: each is a domain name, app.example.com, or a wildcard over every name below one, *.example.com (not *.com, not a.*.example.com)."
  }
}

variable "vpc_id" {
  description = "Required. The VPC the appliance runs in."
  type        = string
}

variable "subnet_ids" {
  description = "Required. Subnets to launch into, one per instance: one subnet, or two in distinct availability zones when ha = true. Public subnets (0.0.0.0/0 to an internet gateway) allow direct WireGuard connections; behind a NAT gateway peers reach the appliance only through relays."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 1 && length(var.subnet_ids) <= 2
    error_message = "subnet_ids must hold one subnet, or two (one per availability zone) for an HA pair."
  }
}

variable "ha" {
  description = "Optional. Deploy an HA pair: two instances in two availability zones (routers advertising the same routes, control picking the primary; recorders sharing one bucket). Not for role control, which runs as one instance with its Elastic IP and state volume."
  type        = bool
  default     = false

  validation {
    condition     = !(var.ha && var.role == "control")
    error_message = "ha = true with role control: control runs as one instance (its state volume attaches to one instance in one AZ)."
  }
  validation {
    condition     = !(var.ha && var.role == "app-connector")
    error_message = "ha = true with role app-connector: HA pairs of app connectors are not built (two connectors would each learn and advertise what they resolve, and their answers may differ); deploy one connector."
  }
  validation {
    condition     = !(var.ha && var.role == "via6")
    error_message = "ha = true with role via6: HA pairs of 4via6 routers are not built or tested on AWS yet; deploy one router per site."
  }
}

variable "egress_subnet_ids" {
  description = "Optional. Role exit-node only, one instance (ha = false): a list of one private subnet, in the instance's availability zone, whose route table sends 0.0.0.0/0 to a NAT gateway. The instance gets a second network interface there (device index 1, source/destination check off) and sends the tailnet's internet traffic out of it, so third parties see the NAT gateway's address, while its WireGuard traffic keeps its own interface, which gets an Elastic IP (AWS assigns no public address at launch to an instance with two interfaces), so peers keep direct connections. A list, like subnet_ids, so that whether there is one is known before the subnet exists."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.egress_subnet_ids) <= 1
    error_message = "egress_subnet_ids holds at most one subnet: the exit node's one egress interface."
  }
  validation {
    condition     = length(var.egress_subnet_ids) == 0 || var.role == "exit-node"
    error_message = "egress_subnet_ids is for role exit-node: only an exit node sends traffic out of an egress subnet (the appliance's [app_connector] has no egress interface)."
  }
  validation {
    condition     = length(var.egress_subnet_ids) == 0 || !var.ha
    error_message = "egress_subnet_ids with ha = true: the egress interface lives in one subnet, so in one availability zone, and an HA pair spans two; deploy one exit node per egress subnet instead."
  }
}

variable "associate_public_ip_address" {
  description = "Optional. Give each instance a public IPv4 address, so peers connect directly (subnet_ids should be public subnets, whose route table sends 0.0.0.0/0 to an internet gateway). Set false for subnets behind a NAT gateway, where peers reach the appliance through relays only."
  type        = bool
  default     = true
}

variable "control_url" {
  description = "Required. Control's node-facing URL, http(s)://HOST:PORT, written into the appliance config in user data (unused for role control)."
  type        = string

  validation {
    condition     = can(regex("^https?://", var.control_url))
    error_message = "control_url must start with http:// or https://."
  }
}

variable "control_public_key" {
  description = "Required. Control's public key (base64), pinned in the appliance config."
  type        = string
}

variable "auth_key" {
  description = "Optional. The auth key, stored in Secrets Manager as causeway/NAME/ROLE-authkey through a write-only attribute: it is kept out of plan files and state (Terraform >= 1.11), but it does pass through the Terraform run and whatever supplies the variable. To keep it out of Terraform altogether, store it yourself and pass auth_key_secret_arn. Exactly one of the two is required, except for role control (which takes neither). The appliance needs it only to register: create it with an expiry (appliance admin keys create --expiry 1h) and revoke it once the instances joined (see the module's README)."
  type        = string
  default     = null
  sensitive   = true
  ephemeral   = true

  validation {
    condition     = var.role == "control" ? (var.auth_key == null && var.auth_key_secret_arn == null) : ((var.auth_key == null) != (var.auth_key_secret_arn == null))
    error_message = "Set exactly one of auth_key and auth_key_secret_arn (neither for role control)."
  }
}

variable "auth_key_version" {
  description = "Optional. Bump to write a new auth_key into the existing secret (write-only values are not compared with state)."
  type        = number
  default     = 1
}

variable "auth_key_secret_arn" {
  description = "Optional. ARN of an existing Secrets Manager secret holding the auth key, instead of auth_key. The instance role may read only this secret."
  type        = string
  default     = null
}

variable "secrets_manager_endpoint" {
  description = "Optional. The Secrets Manager endpoint URL appliances read the auth key from, written into their config (a VPC interface endpoint without private DNS, a FIPS endpoint); null: the region's."
  type        = string
  default     = null
}

variable "secret_recovery_window_in_days" {
  description = "Optional. Recovery window of the auth-key secret on destroy: 0 deletes it at once (so the same name can be deployed again), otherwise 7-30."
  type        = number
  default     = 7
}

variable "routes" {
  description = "Optional. Role subnet-router: prefixes to advertise. Default: the VPC's IPv4 and IPv6 CIDR blocks (role via6: IPv4 prefixes only, default the VPC's IPv4 blocks). An exit node advertises 0.0.0.0/0 and ::/0 and takes no routes; an app connector advertises what its domains resolve to and takes none."
  type        = list(string)
  default     = null

  validation {
    condition     = var.routes == null || var.role != "exit-node"
    error_message = "routes with role exit-node: an exit node advertises 0.0.0.0/0 and ::/0 and nothing else."
  }
  validation {
    condition     = var.routes == null || var.role != "app-connector"
    error_message = "routes with role app-connector: an app connector advertises the addresses its domains resolve to and nothing else."
  }
  validation {
    condition     = var.routes == null ? true : var.role != "via6" || alltrue([for r in var.routes : !strcontains(r, ":")])
    error_message = "routes with role via6: 4via6 maps IPv4 ranges into the tailnet's IPv6 range; expected IPv4 prefixes such as 10.0.0.0/16."
  }
}

variable "snat" {
  description = "Optional. Masquerade tailnet sources. false keeps source addresses: source/destination check is then disabled and 100.64.0.0/10 is added to route_table_ids, pointing at the primary's ENI. An exit node and an app connector always masquerade."
  type        = bool
  default     = true

  validation {
    condition     = var.snat || !contains(["exit-node", "app-connector"], var.role)
    error_message = "snat = false with role ${var.role}: it masquerades the tailnet's traffic to its own address (the internet has no route back to 100.64.0.0/10)."
  }
  validation {
    condition     = var.snat || var.role != "via6"
    error_message = "snat = false with role via6: a 4via6 router without SNAT (tailnet return routes in the VPC) is not built or tested on AWS yet."
  }
}

variable "route_table_ids" {
  description = "Optional. The VPC's route tables that get 100.64.0.0/10 -> the appliance when snat = false. The route is created pointing at instance 0; whichever appliance control makes primary then points it at itself (ec2:ReplaceRoute, allowed on these tables only), and Terraform ignores that change."
  type        = list(string)
  default     = []
}

variable "recorder" {
  description = "Role recorder only, and required there: the recordings bucket (the recorder-storage module's bucket_name), its region (default: the provider's), the networks allowed to send recordings (default: 100.64.0.0/10, the tailnet), and whether the web UI is on (it then listens on port 8080 with the same allow-list)."
  type = object({
    bucket = string
    region = optional(string)
    allow  = optional(list(string), ["100.64.0.0/10"])
    ui     = optional(bool, false)
  })
  default = null

  validation {
    condition     = (var.recorder != null) == (var.role == "recorder")
    error_message = "Set recorder (at least its bucket) for role recorder, and only for it: a recorder without its bucket would boot a config the appliance refuses."
  }
  validation {
    condition     = var.recorder == null || length(try(var.recorder.allow, [])) > 0
    error_message = "recorder.allow must name at least one network: an empty allow-list refuses every recording."
  }
  validation {
    condition     = var.recorder == null || alltrue([for n in try(var.recorder.allow, []) : can(cidrhost(n, 0))])
    error_message = "recorder.allow must hold address prefixes such as 100.64.0.0/10."
  }
}

variable "instance_type" {
  description = "Optional. Instance type; checked against the catalogue, the image's architecture, burstability and the AZ offerings. Default: chosen from the catalogue by size and arch."
  type        = string
  default     = null
}

variable "size" {
  description = "Optional. Sizing tier when instance_type is null: small (2 vCPU), standard (4 vCPU) or consistent-network (more than 16 vCPU). The fewest vCPUs that meet the tier, then the least memory, then c over m over other families, then the name."
  type        = string
  default     = "standard"

  validation {
    condition     = contains(["small", "standard", "consistent-network"], var.size)
    error_message = "size must be small, standard or consistent-network."
  }
}

variable "arch" {
  description = "Optional. CPU architecture: arm64 (Graviton) or x86_64."
  type        = string
  default     = "arm64"

  validation {
    condition     = contains(["arm64", "x86_64"], var.arch)
    error_message = "arch must be arm64 or x86_64."
  }
}

variable "allow_burstable" {
  description = "Optional. Allow burstable (T-family) instance types."
  type        = bool
  default     = false
}

variable "ami_id" {
  description = "Optional. Image to boot. Default: the newest image owned by this account tagged causeway:image = appliance and causeway:arch = arch."
  type        = string
  default     = null
}

variable "root_volume_size" {
  description = "Optional. Root volume size in GiB (gp3, encrypted). Default: the size of the image's root snapshot."
  type        = number
  default     = null
}

variable "root_volume_kms_key_id" {
  description = "Optional. KMS key for the root volume. Default: the account's EBS default key."
  type        = string
  default     = null
}

variable "state_volume_size" {
  description = "Optional. Role control only: size in GiB of control's state volume (gp3, encrypted), kept across instance replacement."
  type        = number
  default     = 8

  validation {
    condition     = var.state_volume_size >= 1 && var.state_volume_size <= 16384
    error_message = "state_volume_size must be 1 to 16384 GiB."
  }
}

variable "state_volume_kms_key_id" {
  description = "Optional. Role control only: KMS key for the state volume. Default: the account's EBS default key."
  type        = string
  default     = null
}

variable "extra_role_policies" {
  description = "Optional. More inline policies for the instance role, name => policy JSON (for example the recorder-storage module's recorder_policy_json)."
  type        = map(string)
  default     = {}
}

variable "tags" {
  description = "Optional. Extra tags on every resource; the causeway:* and Name tags win."
  type        = map(string)
  default     = {}
}
