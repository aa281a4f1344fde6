//! The real programs behind the subnet router, in the VPC namespace:
//! PostgreSQL, an HTTP server and a resolver with a private zone; with
//! `--role exit-node`, the internet's echo server on the web host; and the
//! client-side probes that prove they are reachable (`psql`, `curl`,
//! `getent`).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::unistd::{User, chown};

use super::exec;
use super::netns::Netns;
use super::process::{self, ProcessRecord, Stopped};
use super::state::{DeploymentState, Secret, StateDir, write_if_changed};
use super::topology::{
    APPS, APPS_RESOLVER, APPS_ZONE, HTTP_PORT, PG_PORT, VPC_DB_NAME, VPC_DNS_ZONE, VPC_HOST_ADDR,
    VPC_RANGE, WEB_ADDR,
};
use crate::console::StepOutcome;

/// The row the database serves.
pub const DB_GREETING: &str = "hello from the VPC database";
/// The line the HTTP server's index page carries.
pub const HTTP_GREETING: &str = "hello from the VPC web server";
/// The database and its user.
pub const DB_NAME: &str = "causeway";
/// The query that proves the database works.
pub const DB_QUERY: &str = "select msg from greeting";

/// Process key of PostgreSQL in `state.json`.
pub const PG_KEY: &str = "postgres";
/// Process key of the HTTP server in `state.json`.
pub const HTTP_KEY: &str = "http";
/// Process key of the VPC's resolver in `state.json`.
pub const DNS_KEY: &str = "dns";
/// Process key of the apps' resolver in `state.json` (`--role
/// app-connector`).
pub const APPS_DNS_KEY: &str = "apps-dns";
/// Process key of the internet's echo server in `state.json`
/// (`--role exit-node`).
pub const ECHO_KEY: &str = "echo";
/// Process key of site 2's echo server in `state.json` (`--role via6`).
pub const SITE2_ECHO_KEY: &str = "echo2";
/// The echo server (Python's `http.server`): answers every GET with the
/// caller's address and appends it to a log. Run as `python3 -c
/// ECHO_SERVER_PY CALLERS_LOG PORT` or from a file; the end-to-end tests
/// use the same script.
pub const ECHO_SERVER_PY: &str = include_str!("echo_server.py");

/// The newest `/usr/lib/postgresql/*/bin` holding `initdb`, unless overridden.
pub fn find_pg_bin_dir(overridden: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = overridden {
        if !dir.join("initdb").is_file() {
            bail!("--pg-bin-dir {}: no initdb there", dir.display());
        }
        return Ok(dir.to_owned());
    }
    let mut best: Option<(u32, PathBuf)> = None;
    for entry in fs::read_dir("/usr/lib/postgresql").context("listing /usr/lib/postgresql")? {
        let entry = entry.context("listing /usr/lib/postgresql")?;
        let Some(version) = entry
            .file_name()
            .to_str()
            .and_then(|v| v.parse::<u32>().ok())
        else {
            continue;
        };
        let bin = entry.path().join("bin");
        if bin.join("initdb").is_file() && best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, bin));
        }
    }
    best.map(|(_, p)| p)
        .context("no PostgreSQL server found under /usr/lib/postgresql/*/bin (install postgresql, or pass --pg-bin-dir)")
}

/// PostgreSQL as a service of the VPC host.
#[derive(Debug, Clone)]
pub struct Postgres {
    bin: PathBuf,
    dir: StateDir,
    ns: Netns,
}

/// What PostgreSQL looks like right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgState {
    /// No cluster yet.
    Absent,
    /// A cluster that is not running.
    Stopped,
    /// Running, but the `causeway` database does not answer as it should.
    Unhealthy,
    /// Running and answering the proof query over TCP.
    Healthy,
}

impl Postgres {
    /// PostgreSQL with server binaries in `bin`, state in `dir`, in namespace `ns`.
    pub fn new(bin: PathBuf, dir: StateDir, ns: Netns) -> Self {
        Self { bin, dir, ns }
    }

    /// Observes the cluster without changing anything.
    pub fn observe(&self) -> PgState {
        if !self.dir.pg_data().join("PG_VERSION").is_file() {
            return PgState::Absent;
        }
        if !self.is_running() {
            return PgState::Stopped;
        }
        if self.answers() {
            PgState::Healthy
        } else {
            PgState::Unhealthy
        }
    }

    /// Initialises, configures, starts and seeds the cluster as needed.
    pub fn ensure(&self, state: &mut DeploymentState) -> anyhow::Result<StepOutcome> {
        let mut changed = false;
        let pg = User::from_name("postgres")
            .context("looking up user postgres")?
            .context("user postgres does not exist (install postgresql)")?;
        let pg_dir = self.dir.pg_dir();
        if !pg_dir.is_dir() {
            fs::create_dir_all(&pg_dir)
                .with_context(|| format!("creating {}", pg_dir.display()))?;
            changed = true;
        }
        chown(&pg_dir, Some(pg.uid), Some(pg.gid))
            .with_context(|| format!("chown postgres {}", pg_dir.display()))?;
        fs::set_permissions(&pg_dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", pg_dir.display()))?;

        let pw_file = self.dir.pg_password();
        if !pw_file.is_file() {
            Secret::generate()?.write(&pw_file)?;
            changed = true;
        }
        state
            .secret_files
            .insert("postgres_password".into(), pw_file.clone());
        state.postgres_data_dir = self.dir.pg_data();

        let data = self.dir.pg_data();
        if !data.join("PG_VERSION").is_file() {
            if data.exists() {
                // A half-finished initdb: it refuses a non-empty directory.
                fs::remove_dir_all(&data)
                    .with_context(|| format!("removing {}", data.display()))?;
            }
            let mut cmd = self.as_postgres(&self.bin.join("initdb"));
            cmd.arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "-E", "UTF8", "--auth-local=peer"])
                .args(["--auth-host=scram-sha-256", "--no-instructions"]);
            exec::run(&mut cmd).context("initialising the PostgreSQL cluster")?;
            changed = true;
        }
        let conf_changed = self.write_config(&pg)?;
        changed |= conf_changed;

        if self.is_running() {
            if conf_changed {
                let mut cmd = self.as_postgres(&self.bin.join("pg_ctl"));
                cmd.arg("reload").arg("-D").arg(&data);
                exec::run(&mut cmd).context("reloading PostgreSQL")?;
            }
        } else {
            let mut cmd = self.in_ns_as_postgres(&self.bin.join("pg_ctl"));
            cmd.arg("start")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(self.dir.pg_log());
            cmd.args(["-w", "-t", "30"]);
            exec::run(&mut cmd).with_context(|| {
                format!(
                    "starting PostgreSQL; its log ends with:\n{}",
                    process::log_tail(&self.dir.pg_log(), 10)
                )
            })?;
            changed = true;
        }
        let pid = self.postmaster_pid()?;
        let record = ProcessRecord::of_pid(pid, self.ns.name(), Some(self.dir.pg_log()))?;
        state.processes.insert(PG_KEY.into(), record);

        if !self.answers() {
            self.seed()?;
            changed = true;
            let row = query(
                &self.ns,
                VPC_HOST_ADDR,
                &self.bin,
                &Secret::read(&pw_file)?,
                DB_QUERY,
            )
            .context("querying the freshly seeded database over TCP")?;
            if row != DB_GREETING {
                bail!("the database answered {row:?}, expected {DB_GREETING:?}");
            }
        }
        Ok(if changed {
            StepOutcome::Changed
        } else {
            StepOutcome::Unchanged
        })
    }

    /// Stops the cluster (`pg_ctl stop -m fast`) if it runs.
    pub fn stop(&self) -> anyhow::Result<Stopped> {
        if !self.dir.pg_data().join("postmaster.pid").is_file() || !self.is_running() {
            return Ok(Stopped::NotRunning);
        }
        let mut cmd = self.as_postgres(&self.bin.join("pg_ctl"));
        cmd.arg("stop").arg("-D").arg(self.dir.pg_data());
        cmd.args(["-m", "fast", "-w", "-t", "10"]);
        exec::run(&mut cmd).context("stopping PostgreSQL")?;
        Ok(Stopped::Terminated)
    }

    fn is_running(&self) -> bool {
        let mut cmd = self.as_postgres(&self.bin.join("pg_ctl"));
        cmd.arg("status").arg("-D").arg(self.dir.pg_data());
        exec::output(&mut cmd, None).is_ok_and(|o| o.status.success())
    }

    fn answers(&self) -> bool {
        let Ok(pw) = Secret::read(&self.dir.pg_password()) else {
            return false;
        };
        query(&self.ns, VPC_HOST_ADDR, &self.bin, &pw, DB_QUERY).is_ok_and(|row| row == DB_GREETING)
    }

    fn postmaster_pid(&self) -> anyhow::Result<i32> {
        let path = self.dir.pg_data().join("postmaster.pid");
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        text.lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .with_context(|| format!("no pid on the first line of {}", path.display()))
    }

    fn write_config(&self, pg: &User) -> anyhow::Result<bool> {
        let data = self.dir.pg_data();
        let sock = self.dir.pg_dir();
        let conf = format!(
            "# Written by the Causeway provisioner.\n\
             listen_addresses = '{VPC_HOST_ADDR}'\n\
             port = {PG_PORT}\n\
             unix_socket_directories = '{}'\n\
             password_encryption = 'scram-sha-256'\n",
            sock.display()
        );
        // Tailnet sources arrive only when the routers do not masquerade
        // (`--no-snat`).
        let hba = format!(
            "# Written by the Causeway provisioner.\n\
             local all      postgres            peer\n\
             host  {DB_NAME} {DB_NAME} {VPC_RANGE} scram-sha-256\n\
             host  {DB_NAME} {DB_NAME} 100.64.0.0/10 scram-sha-256\n"
        );
        let mut changed = write_if_changed(&data.join("causeway.conf"), &conf, 0o600)?;
        changed |= write_if_changed(&data.join("pg_hba.conf"), &hba, 0o600)?;
        let main = data.join("postgresql.conf");
        let text =
            fs::read_to_string(&main).with_context(|| format!("reading {}", main.display()))?;
        let include = "include = 'causeway.conf'";
        if !text.lines().any(|l| l.trim() == include) {
            write_if_changed(&main, &format!("{text}\n{include}\n"), 0o600)?;
            changed = true;
        }
        for file in ["causeway.conf", "pg_hba.conf", "postgresql.conf"] {
            chown(&data.join(file), Some(pg.uid), Some(pg.gid))
                .with_context(|| format!("chown postgres {file}"))?;
        }
        Ok(changed)
    }

    /// Creates the `causeway` role, database and table. The password goes
    /// over stdin, and error statements are kept out of the server log.
    fn seed(&self) -> anyhow::Result<()> {
        let pw = Secret::read(&self.dir.pg_password())?;
        let pw = pw.expose();
        let sql = format!(
            "SET log_min_error_statement = panic;\n\
             DO $$ BEGIN\n\
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{DB_NAME}') THEN\n\
                 CREATE ROLE {DB_NAME} LOGIN PASSWORD '{pw}';\n\
               ELSE\n\
                 ALTER ROLE {DB_NAME} LOGIN PASSWORD '{pw}';\n\
               END IF;\n\
             END $$;\n\
             SELECT 'CREATE DATABASE {DB_NAME} OWNER {DB_NAME}' \
               WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DB_NAME}')\\gexec\n\
             \\connect {DB_NAME}\n\
             CREATE TABLE IF NOT EXISTS greeting (msg text NOT NULL);\n\
             INSERT INTO greeting (msg) SELECT '{DB_GREETING}' WHERE NOT EXISTS (SELECT FROM greeting);\n\
             GRANT SELECT ON greeting TO {DB_NAME};\n"
        );
        let mut cmd = self.as_postgres(&self.bin.join("psql"));
        cmd.arg("-h").arg(self.dir.pg_dir());
        cmd.args(["-p", &PG_PORT.to_string(), "-d", "postgres", "-X", "-q"]);
        cmd.args(["-v", "ON_ERROR_STOP=1", "-f", "-"]);
        exec::run_with_stdin(&mut cmd, &sql).context("creating the causeway database")?;
        Ok(())
    }

    /// `runuser -u postgres -- PROGRAM` in the host namespace (cluster
    /// management needs no network), from a directory postgres may enter.
    fn as_postgres(&self, program: &Path) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd.current_dir(self.dir.pg_dir());
        exec::scrub_env(&mut cmd);
        cmd
    }

    /// The same inside the VPC namespace: the server must listen there.
    fn in_ns_as_postgres(&self, program: &Path) -> Command {
        let mut cmd = self.ns.command("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(program);
        cmd.current_dir(self.dir.pg_dir());
        cmd
    }
}

/// Runs `sql` as user `causeway` against the VPC host over TCP, from
/// namespace `ns`; returns the unaligned, trimmed result.
pub fn query(
    ns: &Netns,
    host: &str,
    pg_bin: &Path,
    password: &Secret,
    sql: &str,
) -> anyhow::Result<String> {
    let mut cmd = ns.command(pg_bin.join("psql"));
    cmd.arg(format!(
        "host={host} port={PG_PORT} dbname={DB_NAME} user={DB_NAME} connect_timeout=5 sslmode=disable"
    ))
    .args(["-X", "-A", "-t", "-c", sql])
    .env("PGPASSWORD", password.expose());
    Ok(exec::run(&mut cmd)?.trim().to_owned())
}

/// The HTTP server on the VPC host (`python3 -m http.server`).
#[derive(Debug, Clone)]
pub struct HttpServer {
    dir: StateDir,
    ns: Netns,
}

impl HttpServer {
    /// The HTTP server with its document root in `dir`, in namespace `ns`.
    pub fn new(dir: StateDir, ns: Netns) -> Self {
        Self { dir, ns }
    }

    /// Whether the recorded server runs and serves the page.
    pub fn is_healthy(&self, state: &DeploymentState) -> bool {
        state
            .processes
            .get(HTTP_KEY)
            .is_some_and(ProcessRecord::is_alive)
            && http_get(&self.ns, &vpc_url()).is_ok_and(|b| b.contains(HTTP_GREETING))
    }

    /// Writes the page and starts the server unless it is healthy.
    pub fn ensure(
        &self,
        state: &mut DeploymentState,
        name: &str,
        timeout: Duration,
    ) -> anyhow::Result<StepOutcome> {
        let www = self.dir.www();
        fs::create_dir_all(&www).with_context(|| format!("creating {}", www.display()))?;
        let page = format!(
            "<!doctype html>\n<title>causeway {name}</title>\n<h1>{HTTP_GREETING} (deployment {name})</h1>\n"
        );
        let changed = write_if_changed(&www.join("index.html"), &page, 0o644)?;
        if self.is_healthy(state) {
            return Ok(if changed {
                StepOutcome::Changed
            } else {
                StepOutcome::Unchanged
            });
        }
        let mut cmd = self.ns.command(python3());
        cmd.args(["-m", "http.server", "--bind", VPC_HOST_ADDR, "--directory"])
            .arg(&www)
            .arg(HTTP_PORT.to_string())
            .current_dir(&www);
        start_and_wait(
            &self.ns,
            state,
            HTTP_KEY,
            cmd,
            &self.dir.http_log(),
            timeout,
            || http_get(&self.ns, &vpc_url()).is_ok_and(|b| b.contains(HTTP_GREETING)),
        )?;
        Ok(StepOutcome::Changed)
    }
}

/// A resolver (dnsmasq, port 53) answering one zone from local data;
/// other names in the zone do not exist, and nothing is forwarded
/// anywhere.
///
/// - [`DnsServer::vpc`]: the VPC's resolver on the VPC host, zone
///   [`VPC_DNS_ZONE`], whose one name [`VPC_DB_NAME`] is the VPC host. Like
///   a VPC's own resolver, it is reachable only inside the VPC (and through
///   the subnet router).
/// - [`DnsServer::apps`] (`--role app-connector`): the apps' resolver on
///   the internet host, zone [`APPS_ZONE`] with the [`APPS`], reached by
///   the app connector.
#[derive(Debug, Clone)]
pub struct DnsServer {
    ns: Netns,
    key: &'static str,
    listen: &'static str,
    zone: &'static str,
    /// Name → address; the first is the health check.
    records: Vec<(String, &'static str)>,
    log: PathBuf,
    /// The TTL of its answers (dnsmasq's default, 0, without).
    ttl: Option<u32>,
}

/// The TTL of the apps' answers: the connector's routes live at least
/// this long.
pub const APPS_TTL_SECS: u32 = 60;

impl DnsServer {
    /// The VPC's resolver, in the VPC namespace `ns`, logging in `dir`.
    pub fn vpc(dir: &StateDir, ns: Netns) -> Self {
        Self {
            ns,
            key: DNS_KEY,
            listen: VPC_HOST_ADDR,
            zone: VPC_DNS_ZONE,
            records: vec![(VPC_DB_NAME.to_owned(), VPC_HOST_ADDR)],
            log: dir.dns_log(),
            ttl: None,
        }
    }

    /// The apps' resolver, in the internet host's namespace `ns`.
    pub fn apps(dir: &StateDir, ns: Netns) -> Self {
        Self {
            ns,
            key: APPS_DNS_KEY,
            listen: APPS_RESOLVER,
            zone: APPS_ZONE,
            records: APPS
                .iter()
                .map(|(name, addr)| (format!("{name}.{APPS_ZONE}"), *addr))
                .collect(),
            log: dir.apps_dns_log(),
            ttl: Some(APPS_TTL_SECS),
        }
    }

    /// Whether the recorded server runs and answers for its first name.
    pub fn is_healthy(&self, state: &DeploymentState) -> bool {
        state
            .processes
            .get(self.key)
            .is_some_and(ProcessRecord::is_alive)
            && self.answers()
    }

    fn answers(&self) -> bool {
        self.records
            .first()
            .is_some_and(|(name, addr)| ask(&self.ns, self.listen, name).is_ok_and(|a| a == *addr))
    }

    /// Starts the server unless it is healthy.
    pub fn ensure(
        &self,
        state: &mut DeploymentState,
        timeout: Duration,
    ) -> anyhow::Result<StepOutcome> {
        if self.is_healthy(state) {
            return Ok(StepOutcome::Unchanged);
        }
        let mut cmd = self.ns.command("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--pid-file=",
            "--bind-interfaces",
            "--log-facility=-",
            &format!("--listen-address={}", self.listen),
            &format!("--local=/{}/", self.zone),
        ]);
        for (name, addr) in &self.records {
            cmd.arg(format!("--host-record={name},{addr}"));
        }
        if let Some(ttl) = self.ttl {
            cmd.arg(format!("--local-ttl={ttl}"));
        }
        start_and_wait(&self.ns, state, self.key, cmd, &self.log, timeout, || {
            self.answers()
        })?;
        Ok(StepOutcome::Changed)
    }
}

/// `dig @server NAME A` in `ns`: the first address of the answer.
fn ask(ns: &Netns, server: &str, name: &str) -> anyhow::Result<String> {
    let mut cmd = ns.command("dig");
    cmd.args([
        &format!("@{server}"),
        "+short",
        "+time=1",
        "+tries=2",
        name,
        "A",
    ]);
    let out = exec::run(&mut cmd)?;
    out.lines()
        .next()
        .map(|line| line.trim().to_owned())
        .filter(|line| !line.is_empty())
        .with_context(|| format!("{server} has no address for {name}"))
}

/// `getent ahostsv6 NAME` in `ns`: the first IPv6 address the C library
/// finds through the namespace's own `resolv.conf`. An IPv4-mapped answer
/// (the name has only an A record) is refused.
pub fn resolve_v6(ns: &Netns, name: &str) -> anyhow::Result<std::net::Ipv6Addr> {
    let mut cmd = ns.command("getent");
    cmd.args(["ahostsv6", name]);
    let out = exec::run(&mut cmd).with_context(|| format!("resolving {name} (AAAA)"))?;
    let first = out
        .split_whitespace()
        .next()
        .with_context(|| format!("getent ahostsv6 {name} printed no address"))?;
    let addr: std::net::Ipv6Addr = first.parse().with_context(|| {
        format!("getent ahostsv6 {name} printed {first:?}, not an IPv6 address")
    })?;
    if addr.to_ipv4_mapped().is_some() {
        bail!("{name} has only an IPv4 address ({addr}), no AAAA record");
    }
    Ok(addr)
}

/// `getent ahostsv4 NAME` in `ns`: the first IPv4 address the C library
/// finds, through the namespace's own `resolv.conf` (as any program there
/// would).
pub fn resolve(ns: &Netns, name: &str) -> anyhow::Result<String> {
    let mut cmd = ns.command("getent");
    cmd.args(["ahostsv4", name]);
    let out = exec::run(&mut cmd).with_context(|| format!("resolving {name}"))?;
    out.split_whitespace()
        .next()
        .map(str::to_owned)
        .with_context(|| format!("getent ahostsv4 {name} printed no address"))
}

/// An echo server answering each request with the caller's address:
/// the internet's (`--role exit-node`, `app-connector`) on the web host,
/// or site 2's (`--role via6`) on the VPC host behind the second router.
#[derive(Debug, Clone)]
pub struct EchoServer {
    dir: StateDir,
    ns: Netns,
    /// Its process key in `state.json`.
    key: &'static str,
    /// Its host's address: where its own health check asks, and so the
    /// address it must answer with.
    host: &'static str,
    callers: PathBuf,
    log: PathBuf,
}

impl EchoServer {
    /// The internet's echo server with its script and logs in `dir`, in
    /// the web host's namespace `ns`.
    pub fn new(dir: StateDir, ns: Netns) -> Self {
        Self {
            key: ECHO_KEY,
            host: WEB_ADDR,
            callers: dir.echo_callers(),
            log: dir.echo_log(),
            dir,
            ns,
        }
    }

    /// Site 2's echo server (`--role via6`), on [`VPC_HOST_ADDR`] in site
    /// 2's VPC namespace `ns`.
    pub fn site2(dir: StateDir, ns: Netns) -> Self {
        Self {
            key: SITE2_ECHO_KEY,
            host: VPC_HOST_ADDR,
            callers: dir.site2_echo_callers(),
            log: dir.site2_echo_log(),
            dir,
            ns,
        }
    }

    /// Whether the recorded server runs and answers a request from its own
    /// host with that host's address.
    pub fn is_healthy(&self, state: &DeploymentState) -> bool {
        state
            .processes
            .get(self.key)
            .is_some_and(ProcessRecord::is_alive)
            && self.answers()
    }

    /// A request from its own host is answered with that host's address.
    fn answers(&self) -> bool {
        http_get(&self.ns, &format!("http://{}:{HTTP_PORT}/", self.host))
            .is_ok_and(|b| b.trim() == self.host)
    }

    /// Writes the script and starts the server unless it is healthy.
    pub fn ensure(
        &self,
        state: &mut DeploymentState,
        timeout: Duration,
    ) -> anyhow::Result<StepOutcome> {
        let script = self.dir.echo_script();
        let changed = write_if_changed(&script, ECHO_SERVER_PY, 0o644)?;
        if !changed && self.is_healthy(state) {
            return Ok(StepOutcome::Unchanged);
        }
        let mut cmd = self.ns.command(python3());
        cmd.arg(&script)
            .arg(&self.callers)
            .arg(HTTP_PORT.to_string())
            .current_dir(self.dir.root());
        start_and_wait(&self.ns, state, self.key, cmd, &self.log, timeout, || {
            self.answers()
        })?;
        Ok(StepOutcome::Changed)
    }
}

/// The echo server's URL.
pub fn echo_url() -> String {
    format!("http://{WEB_ADDR}:{HTTP_PORT}/")
}

/// `python3`, preferring the system's.
fn python3() -> &'static str {
    if Path::new("/usr/bin/python3").is_file() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// Stops the recorded process `key` if any, spawns `cmd` in its place in
/// `ns` (recorded under `key`, output to `log`), and waits until
/// `answers` says it serves as it should.
fn start_and_wait(
    ns: &Netns,
    state: &mut DeploymentState,
    key: &str,
    mut cmd: Command,
    log: &Path,
    timeout: Duration,
    answers: impl Fn() -> bool,
) -> anyhow::Result<()> {
    if let Some(old) = state.processes.get(key) {
        old.stop(Duration::from_secs(2));
    }
    let record = process::spawn_logged(&mut cmd, ns.name(), log)?;
    state.processes.insert(key.into(), record.clone());
    let up = process::poll(timeout, || {
        if !record.is_alive() {
            bail!(
                "the {key} server exited; its log ends with:\n{}",
                record.log_tail(10)
            );
        }
        Ok(answers().then_some(()))
    })?;
    if up.is_none() {
        bail!(
            "the {key} server did not answer as expected within {} s; see {}",
            timeout.as_secs(),
            log.display()
        );
    }
    Ok(())
}

/// The HTTP server's URL.
pub fn vpc_url() -> String {
    format!("http://{VPC_HOST_ADDR}:{HTTP_PORT}/")
}

/// `curl` from namespace `ns`; returns the body.
pub fn http_get(ns: &Netns, url: &str) -> anyhow::Result<String> {
    let mut cmd = ns.command("curl");
    cmd.args(["-fsS", "--max-time", "5", url]);
    exec::run(&mut cmd)
}
