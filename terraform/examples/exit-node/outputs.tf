output "vpc_id" {
  description = "The example VPC."
  value       = module.vpc.vpc_id
}

output "instance_ids" {
  description = "The exit node."
  value       = module.exit_node.instance_ids
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
