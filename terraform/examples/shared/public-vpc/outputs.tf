output "vpc_id" {
  description = "The VPC."
  value       = aws_vpc.this.id
}

output "public_subnet_ids" {
  description = "The two public subnets, in distinct availability zones."
  value       = aws_subnet.public[*].id
}

output "public_route_table_id" {
  description = "The public subnets' route table."
  value       = aws_route_table.public.id
}
