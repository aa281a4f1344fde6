output "resolver_ips" {
  description = "Addresses of the resolver the tailnet should ask: the VPC resolver (CIDR base + 2), or the inbound endpoint's two addresses."
  value       = local.resolver_ips
}

output "private_zone_names" {
  description = "Names of the private hosted zones (no trailing dot), to register in control as split-DNS domains."
  value       = local.zone_names
}

output "split_dns" {
  description = "Split-DNS entries for control: zone name => resolver addresses."
  value       = { for z in local.zone_names : z => local.resolver_ips }
}

output "security_group_id" {
  description = "Security group causeway-NAME-dns of the inbound endpoint (null in mode vpc)."
  value       = one(aws_security_group.dns[*].id)
}

output "resolver_endpoint_id" {
  description = "ID of the Route 53 Resolver inbound endpoint (null in mode vpc)."
  value       = one(aws_route53_resolver_endpoint.inbound[*].id)
}
