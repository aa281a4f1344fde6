# Logic of split DNS against a mocked AWS provider.

mock_provider "aws" {
  mock_data "aws_vpc" {
    defaults = {
      cidr_block = "10.42.0.0/16"
    }
  }
  mock_data "aws_subnet" {
    defaults = {
      availability_zone = "us-east-1a"
    }
  }
  mock_data "aws_route53_zone" {
    defaults = {
      name = "internal.example."
    }
  }
  mock_resource "aws_route53_resolver_endpoint" {
    defaults = {
      # Applied to every ip_address block: both get this address.
      ip_address = { ip = "10.42.0.10", ip_id = "rni-1" }
    }
  }
}

variables {
  name             = "t1"
  vpc_id           = "vpc-0123456789abcdef0"
  private_zone_ids = ["Z1"]
}

run "vpc_resolver_is_base_plus_two" {
  command = apply

  assert {
    condition     = jsonencode(output.resolver_ips) == jsonencode(["10.42.0.2"])
    error_message = "mode vpc: the VPC resolver at base + 2"
  }
  assert {
    condition     = length(aws_security_group.dns) == 0 && length(aws_route53_resolver_endpoint.inbound) == 0
    error_message = "mode vpc creates nothing"
  }
  assert {
    condition     = jsonencode(output.private_zone_names) == jsonencode(["internal.example"]) && jsonencode(output.split_dns) == jsonencode({ "internal.example" = ["10.42.0.2"] })
    error_message = "zone names without the trailing dot, mapped to the resolver"
  }
}

run "inbound_endpoint_in_two_azs" {
  command = apply

  variables {
    mode       = "resolver-endpoint"
    subnet_ids = ["subnet-a", "subnet-b"]
  }

  override_data {
    target = data.aws_subnet.endpoint[1]
    values = { availability_zone = "us-east-1b" }
  }

  assert {
    condition     = aws_route53_resolver_endpoint.inbound[0].direction == "INBOUND" && aws_route53_resolver_endpoint.inbound[0].name == "causeway-t1-dns"
    error_message = "an inbound endpoint named causeway-NAME-dns"
  }
  assert {
    condition     = jsonencode(output.resolver_ips) == jsonencode(["10.42.0.10", "10.42.0.10"]) && toset([for a in aws_route53_resolver_endpoint.inbound[0].ip_address : a.subnet_id]) == toset(["subnet-a", "subnet-b"])
    error_message = "one endpoint address in each subnet, all listed"
  }
  assert {
    condition     = aws_security_group.dns[0].name == "causeway-t1-dns" && length(aws_security_group.dns[0].egress) == 0
    error_message = "security group causeway-NAME-dns"
  }
  assert {
    condition = toset([for r in aws_vpc_security_group_ingress_rule.dns : "${r.ip_protocol}/${r.from_port}-${r.to_port} from ${r.cidr_ipv4}"]) == toset([
      "tcp/53-53 from 10.42.0.0/16", "udp/53-53 from 10.42.0.0/16",
      "tcp/53-53 from 100.64.0.0/10", "udp/53-53 from 100.64.0.0/10",
    ])
    error_message = "TCP and UDP 53 from the VPC CIDR and 100.64.0.0/10, nothing else"
  }
  assert {
    condition     = jsonencode(output.split_dns) == jsonencode({ "internal.example" = ["10.42.0.10", "10.42.0.10"] })
    error_message = "split-DNS entries for control"
  }
}

run "endpoint_refused_in_one_az" {
  command = plan

  variables {
    mode       = "resolver-endpoint"
    subnet_ids = ["subnet-a", "subnet-b"]
  }

  expect_failures = [aws_route53_resolver_endpoint.inbound]
}

run "endpoint_needs_two_subnets" {
  command = plan

  variables {
    mode       = "resolver-endpoint"
    subnet_ids = ["subnet-a"]
  }

  expect_failures = [var.subnet_ids]
}
