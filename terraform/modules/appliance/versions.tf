terraform {
  # 1.11: write-only attributes (the auth key stays out of state).
  required_version = ">= 1.11"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # 5.100: secret_string_wo on aws_secretsmanager_secret_version (the version tested).
      version = ">= 5.100, < 6.0"
    }
  }
}
