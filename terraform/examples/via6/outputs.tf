output "vpc_id" {
  description = "The example VPC."
  value       = module.vpc.vpc_id
}

output "instance_ids" {
  description = "The 4via6 router."
  value       = module.via6.instance_ids
}

output "public_ips" {
  description = "The router's public address: where peers connect."
  value       = module.via6.public_ips
}

output "instance_type" {
  description = "The instance type and why."
  value       = module.via6.instance_type_reason
}

output "launch_template_id" {
  description = "The router's launch template."
  value       = module.via6.launch_template_id
}

output "security_group_id" {
  description = "The router's security group."
  value       = module.via6.security_group_id
}

output "auth_key_secret_arn" {
  description = "The secret the router reads its auth key from."
  value       = module.via6.auth_key_secret_arn
}

output "iam_role_name" {
  description = "The router's instance role."
  value       = module.via6.iam_role_name
}

output "site_id" {
  description = "The site ID on every route (site_id in its user data's [subnet_router] routes)."
  value       = var.site_id
}

output "routes" {
  description = "The IPv4 ranges it serves at the site."
  value       = [var.vpc_cidr]
}

output "approval_policy_key" {
  description = "The key of control's policy autoApprovers.routes that approves the route."
  value       = "site:${var.site_id}:${var.vpc_cidr}"
}
