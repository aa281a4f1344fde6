# Logic of the appliance module against a mocked AWS provider: no network,
# runs in seconds. The real API round trip is the examples' apply against
# moto (tests/tests/terraform.rs).

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  name               = "t1"
  role               = "subnet-router"
  vpc_id             = "vpc-0123456789abcdef0"
  subnet_ids         = ["subnet-a"]
  control_url        = "http://control.example:8080"
  control_public_key = "test-control-public-key"
  #checkov:skip=CKV_SECRET_6: a made-up test value that the tests check never reaches user data or state
  auth_key = "tskey-test-never-in-state"
}

run "hardening_and_names" {
  command = apply

  assert {
    condition     = aws_launch_template.this.name == "causeway-t1-subnet-router"
    error_message = "launch template must be named causeway-NAME-ROLE"
  }
  assert {
    condition     = aws_launch_template.this.metadata_options[0].http_tokens == "required" && aws_launch_template.this.metadata_options[0].http_put_response_hop_limit == 1 && aws_launch_template.this.metadata_options[0].http_endpoint == "enabled"
    error_message = "IMDSv2 must be required with hop limit 1"
  }
  assert {
    condition     = aws_instance.this[0].metadata_options[0].http_tokens == "required"
    error_message = "the instance must require IMDSv2 too"
  }
  assert {
    condition     = aws_launch_template.this.key_name == null
    error_message = "no SSH key pair (the instance sets none either: see main.tf)"
  }
  assert {
    condition     = aws_launch_template.this.block_device_mappings[0].device_name == "/dev/xvda" && aws_launch_template.this.block_device_mappings[0].ebs[0].volume_type == "gp3" && aws_launch_template.this.block_device_mappings[0].ebs[0].encrypted == "true" && aws_launch_template.this.block_device_mappings[0].ebs[0].volume_size == 8
    error_message = "root volume must be the image's root device, gp3, encrypted, the snapshot's size"
  }
  assert {
    condition     = aws_launch_template.this.iam_instance_profile[0].arn == "arn:aws:iam::123456789012:instance-profile/causeway-t1-subnet-router"
    error_message = "the template must carry the instance profile"
  }
  assert {
    condition     = length(aws_instance.this) == 1 && aws_instance.this[0].tags["Name"] == "causeway-t1-subnet-router"
    error_message = "a single instance is named causeway-NAME-ROLE without an index"
  }
  assert {
    condition = alltrue([for t in [aws_instance.this[0].tags, aws_security_group.this.tags, aws_iam_role.this.tags, aws_secretsmanager_secret.auth_key[0].tags, aws_launch_template.this.tags] :
    t["causeway:deployment"] == "t1" && t["causeway:role"] == "subnet-router"])
    error_message = "every resource carries causeway:deployment and causeway:role"
  }
  assert {
    condition     = aws_instance.this[0].subnet_id == "subnet-a" && aws_instance.this[0].vpc_security_group_ids == toset([aws_security_group.this.id])
    error_message = "subnet and security group go at the top level of RunInstances"
  }
  assert {
    condition     = aws_instance.this[0].associate_public_ip_address == true
    error_message = "instances get a public address by default, for direct connections"
  }
}

run "security_group_only_wireguard_in" {
  command = apply

  assert {
    condition     = aws_security_group.this.name == "causeway-t1-subnet-router" && length(aws_security_group.this.ingress) == 0 && length(aws_security_group.this.egress) == 0
    error_message = "no inline rules: every rule is a separate resource"
  }
  assert {
    condition     = toset(keys(aws_vpc_security_group_ingress_rule.listen)) == toset(["0.0.0.0/0", "::/0"])
    error_message = "inbound rules: exactly 0.0.0.0/0 and ::/0"
  }
  assert {
    condition = alltrue([for r in values(aws_vpc_security_group_ingress_rule.listen) :
    r.ip_protocol == "udp" && r.from_port == 41641 && r.to_port == 41641])
    error_message = "inbound is only UDP 41641"
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.listen["0.0.0.0/0"].cidr_ipv4 == "0.0.0.0/0" && aws_vpc_security_group_ingress_rule.listen["::/0"].cidr_ipv6 == "::/0"
    error_message = "inbound sources must be 0.0.0.0/0 and ::/0"
  }
  assert {
    condition     = alltrue([for r in values(aws_vpc_security_group_egress_rule.all) : r.ip_protocol == "-1"]) && length(aws_vpc_security_group_egress_rule.all) == 2
    error_message = "egress all, IPv4 and IPv6"
  }
}

run "secret_policy_scoped_to_one_secret" {
  command = apply

  assert {
    condition     = aws_secretsmanager_secret.auth_key[0].name == "causeway/t1/subnet-router-authkey"
    error_message = "secret name per contract"
  }
  assert {
    condition     = aws_secretsmanager_secret_version.auth_key[0].secret_string == null && aws_secretsmanager_secret_version.auth_key[0].secret_string_wo == null
    error_message = "the auth key must not be stored in state"
  }
  assert {
    condition     = length(data.aws_iam_policy_document.auth_key[0].statement) == 1 && data.aws_iam_policy_document.auth_key[0].statement[0].actions == toset(["secretsmanager:GetSecretValue"])
    error_message = "the instance policy allows only secretsmanager:GetSecretValue"
  }
  assert {
    condition     = data.aws_iam_policy_document.auth_key[0].statement[0].resources == toset([aws_secretsmanager_secret.auth_key[0].arn])
    error_message = "the instance policy names exactly the one secret"
  }
  assert {
    condition     = aws_iam_role.this.name == "causeway-t1-subnet-router" && aws_iam_instance_profile.this.name == "causeway-t1-subnet-router" && aws_iam_instance_profile.this.role == aws_iam_role.this.name
    error_message = "role and instance profile named causeway-NAME-ROLE"
  }
  assert {
    condition     = [for p in data.aws_iam_policy_document.assume.statement[0].principals : p.identifiers] == [toset(["ec2.amazonaws.com"])]
    error_message = "the role trusts only EC2"
  }
  assert {
    condition     = strcontains(local.user_data, "auth_key_secret = \"${aws_secretsmanager_secret.auth_key[0].arn}\"") && !strcontains(local.user_data, "tskey-")
    error_message = "user data names the secret's ARN and never holds the key"
  }
}

run "auth_key_and_arn_are_exclusive" {
  command = plan

  variables {
    auth_key_secret_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:mine-XyZ123"
  }

  expect_failures = [var.auth_key]
}

run "ha_pair_in_two_azs" {
  command = apply

  variables {
    ha         = true
    subnet_ids = ["subnet-a", "subnet-b"]
  }

  override_data {
    target = data.aws_subnet.this[1]
    values = { availability_zone = "us-east-1b" }
  }

  assert {
    condition     = length(aws_instance.this) == 2
    error_message = "an HA pair is two instances"
  }
  assert {
    condition     = aws_instance.this[0].subnet_id == "subnet-a" && aws_instance.this[1].subnet_id == "subnet-b"
    error_message = "one instance per subnet"
  }
  assert {
    condition     = local.availability_zones == ["us-east-1a", "us-east-1b"]
    error_message = "the pair spans two distinct AZs"
  }
  assert {
    condition     = [for i in aws_instance.this : i.tags["Name"]] == ["causeway-t1-subnet-router-0", "causeway-t1-subnet-router-1"]
    error_message = "HA instances are named causeway-NAME-ROLE-INDEX"
  }
  assert {
    condition     = length(data.aws_ec2_instance_type_offerings.in_az) == 2
    error_message = "the instance type is checked against the offerings of both AZs"
  }
}

run "ha_pair_refused_in_one_az" {
  command = plan

  variables {
    ha         = true
    subnet_ids = ["subnet-a", "subnet-b"]
  }

  expect_failures = [aws_launch_template.this]
}

run "snat_on_keeps_source_dest_check_and_adds_no_route" {
  command = apply

  variables {
    route_table_ids = ["rtb-1", "rtb-2"]
  }

  assert {
    condition     = aws_instance.this[0].source_dest_check == true && length(aws_route.tailnet) == 0
    error_message = "with SNAT on, source/dest check stays on and no route is added"
  }
  assert {
    condition     = strcontains(local.user_data, "{ prefix = \"10.0.0.0/16\", snat = true }")
    error_message = "routes default to the VPC CIDR, with snat"
  }
  assert {
    condition     = length(aws_iam_role_policy.return_route) == 0 && !strcontains(local.user_data, "aws_route_tables")
    error_message = "with SNAT on, no route permission and no route tables in the config"
  }
}

run "snat_off_disables_check_and_routes_tailnet" {
  command = apply

  variables {
    snat            = false
    route_table_ids = ["rtb-1", "rtb-2"]
  }

  assert {
    condition     = aws_instance.this[0].source_dest_check == false
    error_message = "with SNAT off, source/dest check is disabled"
  }
  assert {
    condition     = length(aws_route.tailnet) == 2 && alltrue([for r in aws_route.tailnet : r.destination_cidr_block == "100.64.0.0/10" && r.network_interface_id == "eni-0123456789abcdef0"])
    error_message = "100.64.0.0/10 -> the instance's ENI in every given route table"
  }
  assert {
    condition     = [for r in aws_route.tailnet : r.route_table_id] == ["rtb-1", "rtb-2"]
    error_message = "routes go into the given route tables"
  }
  assert {
    condition     = strcontains(local.user_data, "snat = false")
    error_message = "the appliance config keeps source addresses"
  }
  assert {
    condition     = strcontains(local.user_data, "aws_route_tables = [\"rtb-1\",\"rtb-2\"]")
    error_message = "the appliance is told the route tables whose return route it moves"
  }
  assert {
    condition     = aws_iam_role_policy.return_route[0].name == "causeway-return-route"
    error_message = "the instance role may move the return route"
  }
  assert {
    condition = data.aws_iam_policy_document.return_route[0].statement[0].actions == toset(["ec2:CreateRoute", "ec2:ReplaceRoute"]) && data.aws_iam_policy_document.return_route[0].statement[0].resources == toset([
      "arn:aws:ec2:us-east-1:123456789012:route-table/rtb-1",
      "arn:aws:ec2:us-east-1:123456789012:route-table/rtb-2",
    ])
    error_message = "CreateRoute and ReplaceRoute on exactly the given route tables"
  }
  assert {
    condition     = data.aws_iam_policy_document.return_route[0].statement[1].actions == toset(["ec2:DescribeRouteTables"]) && data.aws_iam_policy_document.return_route[0].statement[1].resources == toset(["*"])
    error_message = "DescribeRouteTables, which takes no resource, is the only *"
  }
}

run "sizing_fewest_vcpus_then_memory_then_family" {
  command = apply

  override_data {
    target = data.aws_ec2_instance_type.candidate["c6g.xlarge"]
    values = { memory_size = 16384 }
  }
  override_data {
    target = data.aws_ec2_instance_type.candidate["c7g.xlarge"]
    values = { memory_size = 16384 }
  }
  override_data {
    target = data.aws_ec2_instance_type.candidate["r7g.xlarge"]
    values = { memory_size = 32768 }
  }

  assert {
    condition     = local.vcpu_counts_found[0] == 4 && local.instance_type == "m7g.xlarge"
    error_message = "least memory wins over the c family: expected m7g.xlarge, got ${local.instance_type}"
  }
  assert {
    condition     = aws_launch_template.this.instance_type == "m7g.xlarge"
    error_message = "the template carries the chosen type"
  }
}

run "sizing_prefers_c_family_at_equal_memory" {
  command = apply

  assert {
    condition     = local.instance_type == "c6g.xlarge"
    error_message = "at equal vCPU and memory: c family first, then name; got ${local.instance_type}"
  }
  assert {
    condition     = length(data.aws_ec2_instance_types.by_vcpus) == 5 && alltrue([for d in data.aws_ec2_instance_types.by_vcpus : contains([for f in d.filter : "${f.name}=${join(",", f.values)}"], "burstable-performance-supported=false") && contains([for f in d.filter : "${f.name}=${join(",", f.values)}"], "processor-info.supported-architecture=arm64") && contains([for f in d.filter : "${f.name}=${join(",", f.values)}"], "current-generation=true") && contains([for f in d.filter : "${f.name}=${join(",", f.values)}"], "bare-metal=false")])
    error_message = "standard searches 4-8 vCPUs, arm64, non-burstable, current generation, no bare metal"
  }
}

run "sizing_consistent_network_tier" {
  command = plan

  variables {
    size = "consistent-network"
  }

  assert {
    condition     = local.vcpu_ladder[0] == 17
    error_message = "consistent-network means more than 16 vCPUs"
  }
}

run "burstable_allowed_drops_the_filter" {
  command = plan

  variables {
    allow_burstable = true
    arch            = "x86_64"
  }

  override_data {
    target = data.aws_ami.tagged[0]
    values = {
      id               = "ami-0123456789abcdef1"
      architecture     = "x86_64"
      root_device_name = "/dev/xvda"
      block_device_mappings = [
        { device_name = "/dev/xvda", ebs = { volume_size = "8" }, no_device = "", virtual_name = "" },
      ]
    }
  }

  assert {
    condition     = alltrue([for d in data.aws_ec2_instance_types.by_vcpus : !contains([for f in d.filter : f.name], "burstable-performance-supported") && contains([for f in d.filter : "${f.name}=${join(",", f.values)}"], "processor-info.supported-architecture=x86_64")])
    error_message = "allow_burstable drops the burstability filter; arch selects the architecture"
  }
}

run "given_burstable_type_refused" {
  command = plan

  variables {
    instance_type = "t4g.xlarge"
  }

  override_data {
    target = data.aws_ec2_instance_type.given[0]
    values = { burstable_performance_supported = true, supported_architectures = ["arm64"] }
  }

  expect_failures = [aws_launch_template.this]
}

run "given_type_of_other_arch_refused" {
  command = plan

  variables {
    instance_type = "c7g.2xlarge"
  }

  override_data {
    target = data.aws_ec2_instance_type.given[0]
    values = { supported_architectures = ["x86_64"] }
  }

  expect_failures = [aws_launch_template.this]
}

run "given_type_not_offered_refused" {
  command = plan

  variables {
    instance_type = "c8g.xlarge"
  }

  expect_failures = [aws_launch_template.this]
}

run "given_type_accepted" {
  command = apply

  variables {
    instance_type = "c7g.2xlarge"
  }

  assert {
    condition     = aws_launch_template.this.instance_type == "c7g.2xlarge" && length(data.aws_ec2_instance_types.by_vcpus) == 0
    error_message = "a given, valid type is used as is, without a catalogue search"
  }
}

run "image_by_tags" {
  command = plan

  assert {
    condition     = data.aws_ami.tagged[0].owners == tolist(["self"]) && data.aws_ami.tagged[0].most_recent == true
    error_message = "the newest image owned by self"
  }
  assert {
    condition     = toset([for f in data.aws_ami.tagged[0].filter : "${f.name}=${join(",", f.values)}"]) == toset(["tag:causeway:image=appliance", "tag:causeway:arch=arm64", "state=available"])
    error_message = "found by tags causeway:image = appliance and causeway:arch"
  }
}

run "bad_name_refused" {
  command = plan

  variables {
    name = "Bad_Name"
  }

  expect_failures = [var.name]
}

run "unknown_role_refused" {
  command = plan

  variables {
    role = "router"
  }

  expect_failures = [var.role]
}

# The roles the appliance cannot run yet are refused, like the provisioner
# does, rather than deployed as a plain node under their name.
run "relay_refused_as_not_built" {
  command = plan
  variables {
    role = "relay"
  }
  expect_failures = [var.role]
}

run "recorder_without_its_bucket_refused" {
  command = plan
  variables {
    role = "recorder"
  }
  expect_failures = [var.recorder]
}

run "recorder_section_for_a_router_refused" {
  command = plan
  variables {
    recorder = { bucket = "b" }
  }
  expect_failures = [var.recorder]
}

run "recorder_empty_allow_list_refused" {
  command = plan
  variables {
    role     = "recorder"
    recorder = { bucket = "b", allow = [] }
  }
  expect_failures = [var.recorder]
}

run "recorder_gets_its_recorder_section" {
  command = plan

  variables {
    role     = "recorder"
    recorder = { bucket = "causeway-t1-recordings-123456789012", region = "eu-west-1" }
  }

  assert {
    condition     = strcontains(local.user_data, "[recorder]\nlisten = \"0.0.0.0:80\"\nallow = [\"100.64.0.0/10\"]\n")
    error_message = "the recorder listens on port 80 and takes recordings from the tailnet by default"
  }
  assert {
    condition     = strcontains(local.user_data, "[recorder.storage]\nkind = \"s3\"\nbucket = \"causeway-t1-recordings-123456789012\"\nprefix = \"recordings\"\nregion = \"eu-west-1\"\n")
    error_message = "the recorder writes to its bucket"
  }
  assert {
    condition     = strcontains(local.user_data, "[node]") && !strcontains(local.user_data, "[subnet_router]") && !strcontains(local.user_data, "[recorder.web]")
    error_message = "a recorder is a mesh node, advertises no routes, and has no UI unless asked"
  }
}

run "other_roles_get_no_elastic_ip_or_state_volume" {
  command = plan

  assert {
    condition     = length(aws_eip.control) == 0 && length(aws_ebs_volume.control_state) == 0 && length(aws_volume_attachment.control_state) == 0
    error_message = "only control gets an Elastic IP and a state volume"
  }
}

run "exit_node_advertises_the_default_routes_and_forwards" {
  command = apply

  variables {
    role = "exit-node"
  }

  assert {
    condition     = strcontains(local.user_data, "[exit_node]\nipv6 = true\n") && !strcontains(local.user_data, "[subnet_router]") && !strcontains(local.user_data, "egress_mac")
    error_message = "an exit node gets an [exit_node] section, not a subnet router's, and no egress interface unless asked"
  }
  assert {
    condition     = jsonencode(local.routes) == jsonencode(["0.0.0.0/0", "::/0"])
    error_message = "an exit node advertises the default routes"
  }
  assert {
    condition     = aws_instance.this[0].source_dest_check == false && aws_instance.this[0].subnet_id == "subnet-a"
    error_message = "an exit node forwards: source/destination check off, launched into its subnet"
  }
  assert {
    condition     = length(aws_network_interface.egress) == 0 && length(aws_eip.egress) == 0 && length(aws_route.tailnet) == 0 && length(aws_iam_role_policy.return_route) == 0
    error_message = "without egress_subnet_ids: no second interface, no Elastic IP, no return route"
  }
  assert {
    condition     = [for r in aws_vpc_security_group_ingress_rule.listen : "${r.ip_protocol} ${r.from_port}"] == ["udp 41641", "udp 41641"]
    error_message = "only WireGuard in"
  }
}

run "exit_node_with_an_egress_subnet_gets_a_second_interface_and_an_elastic_ip" {
  command = apply

  variables {
    role              = "exit-node"
    egress_subnet_ids = ["subnet-p"]
  }

  assert {
    condition     = aws_network_interface.egress[0].subnet_id == "subnet-p" && aws_network_interface.egress[0].source_dest_check == false && aws_network_interface.egress[0].tags["causeway:interface"] == "egress" && aws_network_interface.egress[0].tags["Name"] == "causeway-t1-exit-node-egress"
    error_message = "the egress interface is in the egress subnet, forwards, and is tagged"
  }
  assert {
    condition     = aws_network_interface.egress[0].security_groups == toset([aws_security_group.egress[0].id]) && aws_network_interface.primary[0].security_groups == toset([aws_security_group.this.id]) && aws_network_interface.primary[0].subnet_id == "subnet-a"
    error_message = "the egress interface has its own group (no inbound); the primary keeps WireGuard's"
  }
  assert {
    condition     = toset([for n in aws_instance.this[0].network_interface : "${n.device_index} ${n.network_interface_id}"]) == toset(["0 ${aws_network_interface.primary[0].id}", "1 ${aws_network_interface.egress[0].id}"])
    error_message = "the instance is launched with its primary interface at device index 0 and the egress interface at 1"
  }
  assert {
    condition     = aws_eip_association.egress[0].network_interface_id == aws_network_interface.primary[0].id
    error_message = "the Elastic IP is on the primary interface: peers connect to it directly"
  }
  assert {
    condition     = strcontains(local.user_data, "[exit_node]\nipv6 = true\negress_mac = \"0a:1b:2c:3d:4e:5f\"\n")
    error_message = "the appliance is told the egress interface's MAC address"
  }
  assert {
    condition     = output.egress_public_ip == "203.0.113.7" && output.egress_nat_gateway_id == "nat-0123456789abcdef0"
    error_message = "the outputs say what third parties see"
  }
}

run "egress_subnet_without_a_nat_gateway_refused" {
  command = plan

  variables {
    role              = "exit-node"
    egress_subnet_ids = ["subnet-p"]
  }

  override_data {
    target = data.aws_route_table.egress
    values = {
      id = "rtb-0bbbbbbbbbbbbbbbb"
      routes = [
        { cidr_block = "0.0.0.0/0", nat_gateway_id = "", gateway_id = "igw-1", network_interface_id = "", transit_gateway_id = "", carrier_gateway_id = "", core_network_arn = "", destination_prefix_list_id = "", egress_only_gateway_id = "", instance_id = "", ipv6_cidr_block = "", local_gateway_id = "", vpc_endpoint_id = "", vpc_peering_connection_id = "" },
      ]
    }
  }

  expect_failures = [data.aws_nat_gateway.egress]
}

run "egress_subnet_in_another_az_refused" {
  command = plan

  variables {
    role              = "exit-node"
    egress_subnet_ids = ["subnet-p"]
  }

  override_data {
    target = data.aws_subnet.egress
    values = {
      availability_zone = "us-east-1b"
    }
  }

  expect_failures = [aws_network_interface.egress]
}

run "egress_subnet_for_a_router_refused" {
  command = plan
  variables {
    egress_subnet_ids = ["subnet-p"]
  }
  expect_failures = [var.egress_subnet_ids]
}

run "egress_subnet_with_ha_refused" {
  command = plan
  variables {
    role              = "exit-node"
    ha                = true
    subnet_ids        = ["subnet-a", "subnet-b"]
    egress_subnet_ids = ["subnet-p"]
  }
  expect_failures = [var.egress_subnet_ids]
}

run "exit_node_routes_or_no_snat_refused" {
  command = plan
  variables {
    role   = "exit-node"
    routes = ["10.0.0.0/16"]
    snat   = false
  }
  expect_failures = [var.routes, var.snat]
}

run "app_connector_writes_its_domains_and_forwards" {
  command = apply

  variables {
    role                  = "app-connector"
    app_connector_domains = ["app.example.com", "*.example.net"]
  }

  assert {
    condition     = strcontains(local.user_data, "[app_connector]\ndomains = [\"app.example.com\",\"*.example.net\"]\n") && !strcontains(local.user_data, "[subnet_router]") && !strcontains(local.user_data, "[exit_node]")
    error_message = "an app connector gets an [app_connector] section with its domains, not a router's or an exit node's"
  }
  assert {
    condition     = length(local.routes) == 0
    error_message = "an app connector is configured with no routes: it learns them from its domains' answers"
  }
  assert {
    condition     = aws_instance.this[0].source_dest_check == false && length(aws_route.tailnet) == 0 && length(aws_iam_role_policy.return_route) == 0
    error_message = "an app connector forwards to arbitrary destinations: source/destination check off, no return route"
  }
  assert {
    condition     = [for r in aws_vpc_security_group_ingress_rule.listen : "${r.ip_protocol} ${r.from_port}"] == ["udp 41641", "udp 41641"]
    error_message = "only WireGuard in"
  }
  assert {
    condition     = aws_secretsmanager_secret.auth_key[0].name == "causeway/t1/app-connector-authkey" && aws_instance.this[0].tags["causeway:role"] == "app-connector"
    error_message = "the contract's names and tags, with the role app-connector"
  }
}

run "app_connector_without_domains_refused" {
  command = plan
  variables {
    role = "app-connector"
  }
  expect_failures = [var.app_connector_domains]
}

run "app_connector_domains_for_a_router_refused" {
  command = plan
  variables {
    app_connector_domains = ["app.example.com"]
  }
  expect_failures = [var.app_connector_domains]
}

run "app_connector_bad_domains_refused" {
  command = plan
  variables {
    role                  = "app-connector"
    app_connector_domains = ["*.com", "a.*.example.com", "app example.com"]
  }
  expect_failures = [var.app_connector_domains]
}

run "app_connector_routes_no_snat_or_ha_refused" {
  command = plan
  variables {
    role                  = "app-connector"
    app_connector_domains = ["app.example.com"]
    routes                = ["10.0.0.0/16"]
    snat                  = false
    ha                    = true
    subnet_ids            = ["subnet-a", "subnet-b"]
  }
  expect_failures = [var.routes, var.snat, var.ha]
}

# Separately: a validation that reads a variable which failed its own
# (ha) is not evaluated.
run "app_connector_egress_subnet_refused" {
  command = plan
  variables {
    role                  = "app-connector"
    app_connector_domains = ["app.example.com"]
    egress_subnet_ids     = ["subnet-p"]
  }
  expect_failures = [var.egress_subnet_ids]
}

run "via6_writes_its_site_id_on_every_route" {
  command = apply

  variables {
    role    = "via6"
    site_id = 7
  }

  assert {
    condition     = strcontains(local.user_data, "[subnet_router]\nroutes = [\n  { prefix = \"10.0.0.0/16\", snat = true, site_id = 7 },\n]\n") && !strcontains(local.user_data, "aws_route_tables")
    error_message = "a 4via6 router gets the VPC's IPv4 range with its site ID, masqueraded"
  }
  assert {
    condition     = aws_instance.this[0].source_dest_check == true && length(aws_route.tailnet) == 0
    error_message = "a 4via6 router masquerades: source/destination check on, no return route"
  }
  assert {
    condition     = aws_secretsmanager_secret.auth_key[0].name == "causeway/t1/via6-authkey" && aws_instance.this[0].tags["causeway:role"] == "via6"
    error_message = "the contract's names and tags, with the role via6"
  }
}

run "via6_site_id_boundaries_accepted" {
  command = plan
  variables {
    role    = "via6"
    site_id = 65535
    routes  = ["10.0.0.0/16", "10.1.0.0/24"]
  }
  assert {
    condition     = strcontains(local.user_data, "  { prefix = \"10.1.0.0/24\", snat = true, site_id = 65535 },\n")
    error_message = "every given route carries the site ID"
  }
}

run "via6_without_site_id_refused" {
  command = plan
  variables {
    role = "via6"
  }
  expect_failures = [var.site_id]
}

run "via6_site_id_out_of_range_refused" {
  command = plan
  variables {
    role    = "via6"
    site_id = 65536
  }
  expect_failures = [var.site_id]
}

run "via6_site_id_for_a_router_refused" {
  command = plan
  variables {
    site_id = 7
  }
  expect_failures = [var.site_id]
}

run "via6_ipv6_routes_no_snat_or_ha_refused" {
  command = plan
  variables {
    role       = "via6"
    site_id    = 7
    routes     = ["fd00::/64"]
    snat       = false
    ha         = true
    subnet_ids = ["subnet-a", "subnet-b"]
  }
  expect_failures = [var.routes, var.snat, var.ha]
}
