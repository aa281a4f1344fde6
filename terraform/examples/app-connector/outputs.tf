output "vpc_id" {
  description = "The example VPC."
  value       = module.vpc.vpc_id
}

output "instance_ids" {
  description = "The app connector."
  value       = module.app_connector.instance_ids
}

output "public_ips" {
  description = "The app connector's public address: where peers connect, and what the apps see."
  value       = module.app_connector.public_ips
}

output "instance_type" {
  description = "The instance type and why."
  value       = module.app_connector.instance_type_reason
}

output "launch_template_id" {
  description = "The app connector's launch template."
  value       = module.app_connector.launch_template_id
}

output "security_group_id" {
  description = "The app connector's security group."
  value       = module.app_connector.security_group_id
}

output "auth_key_secret_arn" {
  description = "The secret the app connector reads its auth key from."
  value       = module.app_connector.auth_key_secret_arn
}

output "iam_role_name" {
  description = "The app connector's instance role."
  value       = module.app_connector.iam_role_name
}

output "domains" {
  description = "The domains it routes ([app_connector] domains in its user data)."
  value       = var.domains
}
