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
