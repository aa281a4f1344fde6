output "vpc_id" {
  description = "The example VPC."
  value       = module.vpc.vpc_id
}

output "instance_ids" {
  description = "The two routers."
  value       = module.router.instance_ids
}

output "availability_zones" {
  description = "Their availability zones."
  value       = module.router.availability_zones
}

output "instance_type" {
  description = "The instance type and why."
  value       = module.router.instance_type_reason
}

output "launch_template_id" {
  description = "The routers' launch template."
  value       = module.router.launch_template_id
}

output "security_group_id" {
  description = "The routers' security group."
  value       = module.router.security_group_id
}

output "auth_key_secret_arn" {
  description = "The secret the routers read their auth key from."
  value       = module.router.auth_key_secret_arn
}

output "iam_role_name" {
  description = "The routers' instance role."
  value       = module.router.iam_role_name
}

output "route_table_id" {
  description = "The public route table (holds 100.64.0.0/10 when snat = false)."
  value       = module.vpc.public_route_table_id
}

output "split_dns" {
  description = "Split-DNS entries to register in control."
  value       = module.dns.split_dns
}

output "dns_security_group_id" {
  description = "The resolver endpoint's security group."
  value       = module.dns.security_group_id
}
