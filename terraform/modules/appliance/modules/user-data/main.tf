# The appliance config an instance boots with (EC2 user data), as
# provisioner/src/aws/spec/user_data.rs writes it: non-secret TOML only
# (the auth key is fetched at boot from Secrets Manager with the instance
# role). Pure: no provider, so it can be rendered and checked offline.

locals {
  routing_roles = ["subnet-router", "via6"]
  # A 4via6 router's routes carry its site ID: the appliance advertises
  # each as the site's IPv6 route in the tailnet's range and translates.
  site = var.role == "via6" ? ", site_id = ${var.site_id}" : ""

  control = join("\n", [
    "# Causeway appliance config, role control (written by Terraform; no secrets)",
    "# Control's database and keys live on its state volume, which the image",
    "# mounts as the appliance's state directory before the appliance starts.",
    "state_dir = \"/var/lib/causeway\"",
    "state_volume = ${jsonencode(var.state_volume)}",
    "",
    "[control]",
    "listen = \"0.0.0.0:8080\"",
    "admin_listen = \"127.0.0.1:8081\"",
    "",
  ])

  node = join("\n", concat([
    "# Causeway appliance config, role ${var.role} (written by Terraform; no secrets)",
    "state_dir = \"/var/lib/causeway\"",
    "",
    "[node]",
    "control_url = ${jsonencode(var.control_url)}",
    "control_public_key = ${jsonencode(var.control_public_key)}",
    ], var.auth_key_secret == null ? [] : [
    "auth_key_secret = ${jsonencode(var.auth_key_secret)}",
    ], var.auth_key_secret == null || var.secrets_manager_endpoint == null ? [] : [
    "secrets_manager_endpoint = ${jsonencode(var.secrets_manager_endpoint)}",
    ], [
    # The public IPv4 is on no interface: the appliance reads it from IMDSv2.
    "cloud = \"aws\"",
  ], [""]))

  subnet_router = !contains(local.routing_roles, var.role) ? "" : join("\n", concat([
    "[subnet_router]",
    "routes = [",
    join("\n", [for r in var.routes : "  { prefix = ${jsonencode(r)}, snat = ${var.snat}${local.site} },"]),
    "]",
    ], length(var.aws_route_tables) == 0 ? [] : [
    "aws_route_tables = ${jsonencode(var.aws_route_tables)}",
  ], [""]))

  # The appliance advertises 0.0.0.0/0 and ::/0 itself and masquerades to
  # its uplink, or to the egress interface.
  exit_node = var.role != "exit-node" ? "" : join("\n", concat([
    "[exit_node]",
    "ipv6 = true",
    ], var.egress_mac == null ? [] : [
    "egress_mac = ${jsonencode(var.egress_mac)}",
  ], [""]))

  # The appliance learns its routes from the answers for these domains and
  # masquerades what it forwards to its uplink.
  app_connector = var.role != "app-connector" ? "" : join("\n", [
    "[app_connector]",
    "domains = ${jsonencode(var.app_connector_domains)}",
    "",
  ])

  recorder = var.recorder == null ? "" : join("\n", concat([
    "[recorder]",
    "listen = \"0.0.0.0:80\"",
    "allow = ${jsonencode(var.recorder.allow)}",
    "spool_dir = \"/var/lib/causeway/recorder/spool\"",
    "",
    "[recorder.storage]",
    "kind = \"s3\"",
    "bucket = ${jsonencode(var.recorder.bucket)}",
    "prefix = \"recordings\"",
    "region = ${jsonencode(var.recorder.region)}",
    ], var.recorder.ui ? [
    "",
    "[recorder.web]",
    "listen = \"0.0.0.0:8080\"",
    "allow = ${jsonencode(var.recorder.allow)}",
  ] : [], [""]))

  text = var.role == "control" ? local.control : join("\n", compact([local.node, local.subnet_router, local.exit_node, local.app_connector, local.recorder]))
}
