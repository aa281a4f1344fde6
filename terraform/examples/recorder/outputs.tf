output "vpc_id" {
  description = "The example VPC."
  value       = module.vpc.vpc_id
}

output "instance_ids" {
  description = "The recorders, instance 0 first."
  value       = module.recorder.instance_ids
}

output "availability_zones" {
  description = "The recorders' AZs (two distinct ones)."
  value       = module.recorder.availability_zones
}

output "hostnames" {
  description = "The recorders' hostnames, the names they register under in control; their tailnet addresses (appliance admin nodes) go into the producer's --recorder list."
  value       = module.recorder.hostnames
}

output "instance_type" {
  description = "The instance type and why."
  value       = module.recorder.instance_type_reason
}

output "launch_template_id" {
  description = "The recorder's launch template."
  value       = module.recorder.launch_template_id
}

output "security_group_id" {
  description = "The recorder's security group."
  value       = module.recorder.security_group_id
}

output "auth_key_secret_arn" {
  description = "The secret the recorder reads its auth key from."
  value       = module.recorder.auth_key_secret_arn
}

output "iam_role_name" {
  description = "The recorders' instance role (holds causeway-auth-key and causeway-recordings)."
  value       = module.recorder.iam_role_name
}

output "bucket_name" {
  description = "The recordings bucket."
  value       = module.recordings.bucket_name
}

output "lifecycle_rule" {
  description = "The recordings lifecycle rule as configured."
  value       = module.recordings.lifecycle_rule
}
