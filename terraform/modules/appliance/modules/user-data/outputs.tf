output "text" {
  description = "The appliance's TOML config."
  value       = local.text
}
