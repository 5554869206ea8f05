//! A throwaway PostgreSQL server in a temporary directory: used by `pgnotify demo` and by the
//! integration tests.
//!
//! `Cluster::start` runs initdb and pg_ctl from this machine's server binaries into
//! `/tmp/pgnotify-XXXXXX` (a short path: unix socket paths are limited to 107 bytes), on a free
//! port with its socket in that directory, durability off. PostgreSQL refuses to run as root,
//! so as root everything runs as the `postgres` user, in a directory that user owns.
//!
//! Cleanup cannot rely on `Drop` alone: a process killed by SIGKILL runs no destructors. So a
//! small guardian shell is started first, in its own process group (a Ctrl-C at the terminal
//! does not reach it), reading a pipe whose other end only this process holds. When this
//! process ends in any way, or drops the `Cluster`, the pipe closes and the guardian stops the
//! server (`pg_ctl -m immediate`) and removes the directory.
//!
//! With `Options::tls` the server also speaks TLS, with a certificate from a certificate
//! authority of its own (`tls`), and `Cluster::start_standby` makes a streaming replica of a
//! running server, for failover tests.

mod standby;
pub mod tls;

use anyhow::{Context, Result, bail};
use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The guardian: waits for its stdin to close, then stops the server and removes the directory
/// (unless told `keep`). Arguments: pg_ctl, data directory, root directory.
const GUARDIAN: &str = r#"IFS= read -r line
[ "$line" = keep ] && exit 0
"$1" -D "$2" -m immediate -w stop >/dev/null 2>&1
rm -rf "$3""#;

/// What a cluster is started with, beyond the defaults.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Extra `postgresql.conf` lines.
    pub conf: Vec<String>,
    /// `pg_hba.conf` lines placed before the default `trust` lines (for every user, database
    /// and replication, locally and on loopback), so the first match wins over them: e.g.
    /// `hostssl all all 127.0.0.1/32 scram-sha-256` and `hostnossl all all 127.0.0.1/32
    /// reject`. Give a role a password with [`Cluster::psql`].
    pub hba: Vec<String>,
    /// Serve TLS too (`ssl = on`): a CA and a server certificate for `localhost` and
    /// `127.0.0.1` in `ROOT/tls/`, the CA also trusted for client certificates. See
    /// [`Cluster::ca`].
    pub tls: bool,
}

/// The name of the CA's files in `ROOT/tls/`: `ca.crt`, `ca.key`.
const CA_NAME: &str = "ca";
/// The name of the server certificate's files in `ROOT/tls/`: `server.crt`, `server.key`.
const SERVER_CERT: &str = "server";

/// A running throwaway server. Dropping it stops the server and removes its directory.
pub struct Cluster {
    root: PathBuf,
    bin: PathBuf,
    port: u16,
    owner: Option<nix::unistd::User>,
    guardian: Option<Child>,
    /// The certificate authority, when the server serves TLS.
    ca: Option<tls::CertAuthority>,
}

/// The name of the superuser `initdb` creates.
pub const SUPERUSER: &str = "postgres";

impl Cluster {
    /// Creates, configures and starts a new server.
    pub fn start(options: &Options) -> Result<Cluster> {
        let mut cluster = Cluster::prepare(find_bin_dir()?, server_owner()?)?;
        cluster.init(options)?;
        if options.tls {
            let ca = tls::CertAuthority::new(&cluster.tls_path(), CA_NAME)?;
            ca.issue_server(
                &cluster.tls_path(),
                SERVER_CERT,
                &["localhost", "127.0.0.1"],
            )?;
            cluster.ca = Some(ca);
            cluster.serve_tls()?;
        }
        cluster.launch()?;
        Ok(cluster)
    }

    /// A new root directory, owned by the server's owner, with its guardian running.
    fn prepare(bin: PathBuf, owner: Option<nix::unistd::User>) -> Result<Cluster> {
        let root = nix::unistd::mkdtemp("/tmp/pgnotify-XXXXXX")
            .context("could not create a temporary directory in /tmp")?;
        let mut cluster = Cluster {
            root,
            bin,
            port: 0,
            owner,
            guardian: None,
            ca: None,
        };
        cluster.give_to_owner(&cluster.root)?;
        cluster.guardian = Some(cluster.spawn_guardian()?);
        Ok(cluster)
    }

    /// Runs SQL with psql as the superuser over the unix socket, and returns what it printed
    /// (unaligned, tuples only, trimmed); fails with psql's error. E.g.
    /// `CREATE ROLE alice LOGIN PASSWORD 'secret'` gives alice a SCRAM password
    /// (`password_encryption` is `scram-sha-256` by default).
    pub fn psql(&self, sql: &str) -> Result<String> {
        let out = self.run_tool(
            "psql",
            &[
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.conninfo(),
                "-c",
                sql,
            ],
        )?;
        if !out.status.success() {
            bail!(
                "psql -c {sql:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The certificate authority whose server certificate the server presents, when started
    /// with `Options::tls`: its [`cert_path`](tls::CertAuthority::cert_path) is the
    /// `sslrootcert` that verifies the server, and it issues client certificates the server
    /// accepts (and certificates for other tests).
    pub fn ca(&self) -> Option<&tls::CertAuthority> {
        self.ca.as_ref()
    }

    /// `ROOT/tls/`, holding `ca.crt`, `ca.key`, `server.crt`, `server.key`, when started with
    /// `Options::tls`.
    pub fn tls_dir(&self) -> Option<PathBuf> {
        self.ca.as_ref().map(|_| self.tls_path())
    }

    /// A libpq connection string for the superuser over TCP to `localhost`, verifying the
    /// server's certificate (`sslmode=verify-full`), when started with `Options::tls`.
    pub fn tls_conninfo(&self) -> Option<String> {
        let ca = self.ca.as_ref()?;
        Some(format!(
            "host=localhost port={} user={SUPERUSER} dbname=postgres sslmode=verify-full \
             sslrootcert={}",
            self.port,
            ca.cert_path().display()
        ))
    }

    /// The directory holding the data directory, the socket and the logs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The unix-socket directory (use it as the host).
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// The TCP port on 127.0.0.1, also the socket's port number.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The server binaries used.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// A libpq connection string for the superuser over the unix socket.
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} user={SUPERUSER} dbname=postgres",
            self.root.display(),
            self.port
        )
    }

    /// The last `lines` lines of the server log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Runs a server binary (pg_ctl, psql, pgbench...) as the server's owner.
    pub fn run_tool(&self, tool: &str, args: &[&str]) -> Result<Output> {
        let mut cmd = self.command(tool);
        cmd.args(args).stdin(Stdio::null());
        cmd.output()
            .with_context(|| format!("could not run {tool}"))
    }

    /// Runs `pg_ctl` on this cluster's data directory, e.g. `["restart", "-m", "fast"]`.
    pub fn pg_ctl(&self, args: &[&str]) -> Result<Output> {
        let data = self.data_dir();
        let data = data.to_string_lossy();
        let log = self.log_path();
        let log = log.to_string_lossy();
        let mut full = vec!["-D", &data, "-l", &log, "-w", "-t", "60"];
        full.extend_from_slice(args);
        self.run_tool("pg_ctl", &full)
    }

    /// Leaves the server running after this process ends (see [`Cluster::stop_command`]).
    pub fn keep(mut self) {
        if let Some(mut guardian) = self.guardian.take() {
            if let Some(mut stdin) = guardian.stdin.take() {
                let _ = stdin.write_all(b"keep\n");
            }
            let _ = guardian.wait();
        }
    }

    /// The shell command that stops a kept server and removes its directory.
    pub fn stop_command(&self) -> String {
        let as_owner = match &self.owner {
            Some(user) => format!("runuser -u {} -- ", user.name),
            None => String::new(),
        };
        format!(
            "{as_owner}{} -D {} stop -m fast && {as_owner}rm -rf {}",
            self.bin.join("pg_ctl").display(),
            self.data_dir().display(),
            self.root.display()
        )
    }

    fn tls_path(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// Points the server at the files in `ROOT/tls/`, and gives them to the server's owner:
    /// the server reads its key only when the key is its own, and the guardian, removing the
    /// directory, must be able to empty `tls/`.
    fn serve_tls(&self) -> Result<()> {
        let dir = self.tls_path();
        let file = |name: &str| dir.join(name).display().to_string();
        self.give_to_owner(&dir)?;
        self.give_to_owner(&dir.join(format!("{SERVER_CERT}.key")))?;
        append(
            &self.data_dir().join("postgresql.conf"),
            &[
                "ssl = on".to_owned(),
                format!("ssl_cert_file = '{}'", file(&format!("{SERVER_CERT}.crt"))),
                format!("ssl_key_file = '{}'", file(&format!("{SERVER_CERT}.key"))),
                format!("ssl_ca_file = '{}'", file(&format!("{CA_NAME}.crt"))),
            ],
        )
    }

    /// Gives a file or directory to the server's owner (when running as root).
    fn give_to_owner(&self, path: &Path) -> Result<()> {
        if let Some(user) = &self.owner {
            nix::unistd::chown(path, Some(user.uid), Some(user.gid)).with_context(|| {
                format!("could not give {} to the postgres user", path.display())
            })?;
        }
        Ok(())
    }

    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(tool));
        cmd.current_dir(&self.root).process_group(0);
        without_pg_env(&mut cmd);
        if let Some(user) = &self.owner {
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        cmd
    }

    fn spawn_guardian(&self) -> Result<Child> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(GUARDIAN)
            .arg("pgnotify-guardian")
            .arg(self.bin.join("pg_ctl"))
            .arg(self.data_dir())
            .arg(&self.root)
            .current_dir("/")
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(user) = &self.owner {
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        cmd.spawn()
            .context("could not start the cleanup guardian (sh)")
    }

    fn init(&self, options: &Options) -> Result<()> {
        let data = self.data_dir();
        let out = self.run_tool(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "--no-sync",
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        )?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut conf = vec![
            "listen_addresses = '127.0.0.1'".to_owned(),
            format!("unix_socket_directories = '{}'", self.root.display()),
            "fsync = off".to_owned(),
            "synchronous_commit = off".to_owned(),
            "full_page_writes = off".to_owned(),
            "max_connections = 40".to_owned(),
            "shared_buffers = 16MB".to_owned(),
        ];
        conf.extend(options.conf.iter().cloned());
        append(&data.join("postgresql.conf"), &conf)?;
        let mut hba = options.hba.clone();
        hba.extend(
            [
                "local all all trust",
                "host all all 127.0.0.1/32 trust",
                "host all all ::1/128 trust",
                "local replication all trust",
                "host replication all 127.0.0.1/32 trust",
            ]
            .map(String::from),
        );
        fs::write(data.join("pg_hba.conf"), hba.join("\n") + "\n")
            .context("could not write pg_hba.conf")
    }

    /// Starts the server on a free port; another port is tried when one was taken meanwhile.
    fn launch(&mut self) -> Result<()> {
        let mut last = String::new();
        for _ in 0..5 {
            self.port = free_port()?;
            append(
                &self.data_dir().join("postgresql.conf"),
                &[format!("port = {}", self.port)],
            )?;
            let out = self.pg_ctl(&["start"])?;
            if out.status.success() {
                return Ok(());
            }
            last = self.log_tail(5);
            if !last.contains("could not bind") && !last.contains("already in use") {
                break;
            }
        }
        bail!(
            "the PostgreSQL server did not start: {}",
            last.replace('\n', " | ")
        )
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut guardian) = self.guardian.take() {
            drop(guardian.stdin.take());
            let _ = guardian.wait();
        }
    }
}

fn append(path: &Path, lines: &[String]) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .with_context(|| format!("could not open {}", path.display()))?;
    writeln!(file, "\n{}", lines.join("\n"))
        .with_context(|| format!("could not write {}", path.display()))
}

/// Keeps the `PG*` variables of this process from a child, so that it reaches the throwaway
/// server and never the server the user's environment points at. `NOTIFY_SOCKET` too: a
/// server built with systemd support would tell the service manager that it is ready.
pub fn without_pg_env(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("NOTIFY_SOCKET");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("could not find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Who runs the server: `None` for this process's user, the `postgres` user when root.
fn server_owner() -> Result<Option<nix::unistd::User>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some(user)),
        _ => bail!(
            "PostgreSQL refuses to run as root, and there is no `postgres` user to run it as; \
             create one (useradd postgres) or run pgnotify as another user"
        ),
    }
}

/// Finds initdb, pg_ctl and postgres: `PGNOTIFY_PG_BINDIR`, then `pg_config --bindir`, then
/// the newest `/usr/lib/postgresql/*/bin` (Debian, Ubuntu), then `PATH`.
pub fn find_bin_dir() -> Result<PathBuf> {
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("PGNOTIFY_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if has_server(&dir) {
            return Ok(dir);
        }
        bail!(
            "PGNOTIFY_PG_BINDIR={} holds no initdb and pg_ctl; point it at PostgreSQL's server \
             binaries, or install them with `sudo apt-get install postgresql` (Debian/Ubuntu)",
            dir.display()
        );
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let mut debian: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .collect();
    debian.sort();
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let candidates = from_pg_config
        .into_iter()
        .chain(debian.into_iter().rev().map(|(_, dir)| dir))
        .chain(on_path);
    for dir in candidates {
        if has_server(&dir) {
            return Ok(dir);
        }
    }
    bail!(
        "no PostgreSQL server binaries (initdb, pg_ctl) found in /usr/lib/postgresql/*/bin, \
         `pg_config --bindir` or PATH; install them with `sudo apt-get install postgresql` \
         (Debian/Ubuntu), or set PGNOTIFY_PG_BINDIR"
    )
}
