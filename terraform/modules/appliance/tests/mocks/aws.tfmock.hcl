# Mocked AWS answers shared by the appliance tests.

# The provider validates policy JSON even when mocked; the statements are
# asserted on the data source's arguments instead.
mock_data "aws_iam_policy_document" {
  defaults = {
    json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
  }
}
mock_data "aws_vpc" {
  defaults = {
    cidr_block = "10.0.0.0/16"
    cidr_block_associations = [
      { association_id = "vpc-cidr-assoc-1", cidr_block = "10.0.0.0/16", state = "associated" },
    ]
    ipv6_cidr_block = ""
  }
}
mock_data "aws_subnet" {
  defaults = {
    availability_zone = "us-east-1a"
  }
}
mock_data "aws_ami" {
  defaults = {
    id               = "ami-0123456789abcdef0"
    architecture     = "arm64"
    root_device_name = "/dev/xvda"
    block_device_mappings = [
      { device_name = "/dev/xvda", ebs = { volume_size = "8", volume_type = "gp2" }, no_device = "", virtual_name = "" },
    ]
  }
}
mock_data "aws_ec2_instance_types" {
  defaults = {
    instance_types = ["r7g.xlarge", "m7g.xlarge", "c7g.xlarge", "c6g.xlarge"]
  }
}
mock_data "aws_ec2_instance_type" {
  defaults = {
    memory_size                     = 8192
    supported_architectures         = ["arm64"]
    burstable_performance_supported = false
  }
}
mock_data "aws_ec2_instance_type_offerings" {
  defaults = {
    instance_types = ["r7g.xlarge", "m7g.xlarge", "c7g.xlarge", "c6g.xlarge", "c7g.2xlarge", "t4g.xlarge"]
  }
}
mock_resource "aws_secretsmanager_secret" {
  defaults = {
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:causeway/t1/subnet-router-authkey-AbCdEf"
  }
}
mock_resource "aws_iam_instance_profile" {
  defaults = {
    arn = "arn:aws:iam::123456789012:instance-profile/causeway-t1-subnet-router"
  }
}
mock_resource "aws_launch_template" {
  defaults = {
    id             = "lt-0123456789abcdef0"
    latest_version = 1
  }
}
mock_resource "aws_instance" {
  defaults = {
    primary_network_interface_id = "eni-0123456789abcdef0"
  }
}
# Control's user data names its state volume by ID, known only once the
# volume exists: the plan-time assertions see this one.
mock_resource "aws_ebs_volume" {
  override_during = plan
  defaults = {
    id = "vol-0123456789abcdef0"
  }
}
# The return-route policy names route tables by ARN.
mock_data "aws_region" {
  defaults = {
    name = "us-east-1"
  }
}
mock_data "aws_caller_identity" {
  defaults = {
    account_id = "123456789012"
  }
}
mock_data "aws_partition" {
  defaults = {
    partition = "aws"
  }
}
# An exit node's egress subnet: its route table sends 0.0.0.0/0 to a NAT
# gateway, and the interface made there has a MAC address.
mock_data "aws_route_table" {
  defaults = {
    id = "rtb-0aaaaaaaaaaaaaaaa"
    routes = [
      { cidr_block = "0.0.0.0/0", nat_gateway_id = "nat-0123456789abcdef0", gateway_id = "", network_interface_id = "", transit_gateway_id = "", carrier_gateway_id = "", core_network_arn = "", destination_prefix_list_id = "", egress_only_gateway_id = "", instance_id = "", ipv6_cidr_block = "", local_gateway_id = "", vpc_endpoint_id = "", vpc_peering_connection_id = "" },
    ]
  }
}
mock_data "aws_nat_gateway" {
  defaults = {
    public_ip = "203.0.113.7"
  }
}
mock_resource "aws_network_interface" {
  defaults = {
    mac_address = "0a:1b:2c:3d:4e:5f"
  }
}
