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
