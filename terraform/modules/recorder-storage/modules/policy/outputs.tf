output "name" {
  description = "Name of the inline policy on the recorder's instance role."
  value       = local.name
}

output "json" {
  description = "The policy document."
  value       = jsonencode({ Version = "2012-10-17", Statement = local.statements })
}

output "statements" {
  description = "The policy's statements, for tests."
  value       = local.statements
}
