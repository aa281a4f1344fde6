# The auth key given as an existing secret. Plan only: terraform test 1.11
# cannot apply with an ephemeral variable left unset ("was not set during the
# plan phase"), and everything asserted here is known at plan time.

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  name                = "t1"
  role                = "subnet-router"
  vpc_id              = "vpc-0123456789abcdef0"
  subnet_ids          = ["subnet-a"]
  control_url         = "http://control.example:8080"
  control_public_key  = "test-control-public-key"
  auth_key_secret_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:mine-XyZ123"
}

run "existing_secret_arn" {
  command = plan

  assert {
    condition     = length(aws_secretsmanager_secret.auth_key) == 0
    error_message = "no secret is created when one is given"
  }
  assert {
    condition     = data.aws_iam_policy_document.auth_key[0].statement[0].resources == toset(["arn:aws:secretsmanager:us-east-1:123456789012:secret:mine-XyZ123"])
    error_message = "the policy names the given secret"
  }
  assert {
    condition     = !strcontains(local.user_data, "secrets_manager_endpoint")
    error_message = "no Secrets Manager endpoint unless one is given"
  }
}

run "secrets_manager_endpoint" {
  command = plan

  variables {
    secrets_manager_endpoint = "https://vpce-0abc.secretsmanager.us-east-1.vpce.amazonaws.com"
  }

  assert {
    condition     = strcontains(local.user_data, "secrets_manager_endpoint = \"https://vpce-0abc.secretsmanager.us-east-1.vpce.amazonaws.com\"")
    error_message = "the endpoint is in the user data"
  }
}


run "control_needs_no_secret" {
  command = plan

  variables {
    role                = "control"
    auth_key_secret_arn = null
  }

  assert {
    condition     = length(aws_secretsmanager_secret.auth_key) == 0 && length(aws_iam_role_policy.auth_key) == 0 && !strcontains(local.user_data, "auth_key_secret")
    error_message = "control gets neither a secret nor a secret policy"
  }
}

run "control_listens_on_tcp_8080_and_runs_no_node" {
  command = plan

  variables {
    role                = "control"
    auth_key_secret_arn = null
  }

  assert {
    condition = alltrue([for r in values(aws_vpc_security_group_ingress_rule.listen) :
    r.ip_protocol == "tcp" && r.from_port == 8080 && r.to_port == 8080]) && length(aws_vpc_security_group_ingress_rule.listen) == 2
    error_message = "control's only inbound port is TCP 8080, from 0.0.0.0/0 and ::/0"
  }
  assert {
    condition     = strcontains(local.user_data, "[control]\nlisten = \"0.0.0.0:8080\"") && !strcontains(local.user_data, "[node]")
    error_message = "control's user data configures the control role, not a node"
  }
}

run "control_gets_an_elastic_ip_and_a_state_volume" {
  command = plan

  variables {
    role                = "control"
    auth_key_secret_arn = null
  }

  assert {
    condition     = length(aws_eip.control) == 1 && aws_eip.control[0].domain == "vpc" && aws_eip.control[0].tags["causeway:deployment"] == "t1" && aws_eip.control[0].tags["Name"] == "causeway-t1-control"
    error_message = "control gets one tagged Elastic IP"
  }
  assert {
    condition     = length(aws_eip_association.control) == 1
    error_message = "the Elastic IP is associated with the control instance"
  }
  assert {
    condition     = aws_ebs_volume.control_state[0].encrypted && aws_ebs_volume.control_state[0].type == "gp3" && aws_ebs_volume.control_state[0].size == 8 && aws_ebs_volume.control_state[0].availability_zone == "us-east-1a" && aws_ebs_volume.control_state[0].tags["Name"] == "causeway-t1-control-state"
    error_message = "an encrypted 8 GiB gp3 state volume in the instance's AZ, named causeway-NAME-control-state"
  }
  assert {
    condition     = aws_volume_attachment.control_state[0].device_name == "/dev/sdf"
    error_message = "the state volume is attached to the control instance as /dev/sdf"
  }
  assert {
    condition     = strcontains(local.user_data, "state_dir = \"/var/lib/causeway\"\nstate_volume = \"vol-0123456789abcdef0\"")
    error_message = "control's user data names its state volume, mounted as its state_dir"
  }
}

run "control_ha_refused" {
  command = plan

  variables {
    role                = "control"
    auth_key_secret_arn = null
    ha                  = true
    subnet_ids          = ["subnet-a", "subnet-b"]
  }

  expect_failures = [var.ha]
}
