output "vpc_id" {
  description = "The example VPC."
  value       = module.vpc.vpc_id
}

output "instance_ids" {
  description = "The exit node."
  value       = module.exit_node.instance_ids
}

output "public_ips" {
  description = "The exit node's Elastic IP: where peers connect."
  value       = module.exit_node.public_ips
}

output "instance_type" {
  description = "The instance type and why."
  value       = module.exit_node.instance_type_reason
}

output "launch_template_id" {
  description = "The exit node's launch template."
  value       = module.exit_node.launch_template_id
}

output "security_group_id" {
  description = "The exit node's security group."
  value       = module.exit_node.security_group_id
}

output "auth_key_secret_arn" {
  description = "The secret the exit node reads its auth key from."
  value       = module.exit_node.auth_key_secret_arn
}

output "iam_role_name" {
  description = "The exit node's instance role."
  value       = module.exit_node.iam_role_name
}

output "egress_subnet_id" {
  description = "The private subnet forwarded internet traffic leaves through."
  value       = aws_subnet.egress.id
}

output "egress_interface_id" {
  description = "The exit node's egress interface."
  value       = module.exit_node.egress_interface_id
}

output "egress_mac" {
  description = "Its MAC address (egress_mac in the appliance config)."
  value       = module.exit_node.egress_mac
}

output "nat_gateway_id" {
  description = "The NAT gateway the egress subnet routes through."
  value       = aws_nat_gateway.this.id
}

output "egress_public_ip" {
  description = "What third parties see: the NAT gateway's public address."
  value       = module.exit_node.egress_public_ip
}
