output "instance_ids" {
  description = "Instance IDs, index 0 first (two with ha = true)."
  value       = aws_instance.this[*].id
}

output "availability_zones" {
  description = "Availability zone of each instance."
  value       = aws_instance.this[*].availability_zone
}

output "private_ips" {
  description = "Private IPv4 address of each instance."
  value       = aws_instance.this[*].private_ip
}

output "hostnames" {
  description = "Hostname of each instance (the first label of its private DNS name): the name it registers under in control."
  value       = [for i in aws_instance.this : split(".", i.private_dns)[0]]
}

output "public_ips" {
  description = "Public IPv4 address of each instance (empty strings in subnets without public addresses; with egress_subnet_ids, the Elastic IP)."
  value       = local.egress ? [aws_eip.egress[0].public_ip] : aws_instance.this[*].public_ip
}

output "network_interface_ids" {
  description = "Primary network interface of each instance."
  value       = aws_instance.this[*].primary_network_interface_id
}

output "instance_type" {
  description = "The instance type used (given, or chosen from the catalogue)."
  value       = local.instance_type
}

output "instance_type_reason" {
  description = "One line explaining the instance type, as `provisioner plan` prints it."
  value = var.instance_type != null ? "${var.instance_type}: given (${local.arch}, checked against the catalogue and the AZ offerings)" : (
    local.chosen_instance_type == null ? null :
    "${local.chosen_instance_type}: fewest vCPUs (${local.vcpu_counts_found[0]}) for size ${var.size}, then least memory, c over m over other families, then name; ${local.arch}, ${var.allow_burstable ? "burstable allowed" : "non-burstable"}, offered in ${join(" and ", local.availability_zones)}"
  )
}

output "ami_id" {
  description = "The image the instances boot."
  value       = local.image.id
}

output "launch_template_id" {
  description = "ID of launch template causeway-NAME-ROLE."
  value       = aws_launch_template.this.id
}

output "security_group_id" {
  description = "ID of security group causeway-NAME-ROLE."
  value       = aws_security_group.this.id
}

output "iam_role_name" {
  description = "Name of the instance role causeway-NAME-ROLE (attach more policies to it, e.g. the recorder's)."
  value       = aws_iam_role.this.name
}

output "iam_role_arn" {
  description = "ARN of the instance role."
  value       = aws_iam_role.this.arn
}

output "instance_profile_name" {
  description = "Name of the instance profile causeway-NAME-ROLE."
  value       = aws_iam_instance_profile.this.name
}

output "auth_key_secret_arn" {
  description = "ARN of the secret the appliance reads its auth key from (created here, or auth_key_secret_arn)."
  value       = local.auth_key_secret
}

output "routes" {
  description = "Prefixes the appliance advertises."
  value       = local.routes
}

output "tailnet_route_ids" {
  description = "IDs of the 100.64.0.0/10 routes added when snat = false."
  value       = aws_route.tailnet[*].id
}

output "control_address" {
  description = "Role control: its Elastic IP, stable across instance replacement (null for other roles). Nodes use http://ADDRESS:8080 as control_url."
  value       = local.is_control ? aws_eip.control[0].public_ip : null
}

output "state_volume_id" {
  description = "Role control: the state volume, attached as /dev/sdf (null for other roles)."
  value       = local.is_control ? aws_ebs_volume.control_state[0].id : null
}

output "egress_interface_id" {
  description = "Role exit-node with egress_subnet_ids: the egress interface (null otherwise)."
  value       = local.egress ? aws_network_interface.egress[0].id : null
}

output "egress_mac" {
  description = "Role exit-node with egress_subnet_ids: the egress interface's MAC address, egress_mac in the appliance config (null otherwise)."
  value       = local.egress ? aws_network_interface.egress[0].mac_address : null
}

output "egress_nat_gateway_id" {
  description = "Role exit-node with egress_subnet_ids: the NAT gateway the egress subnet's default route points at (null otherwise)."
  value       = local.egress ? local.egress_nat_gateway : null
}

output "egress_public_ip" {
  description = "Role exit-node with egress_subnet_ids: the NAT gateway's public address, which third parties see (null otherwise)."
  value       = local.egress ? data.aws_nat_gateway.egress[0].public_ip : null
}
