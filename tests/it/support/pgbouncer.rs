//! Debian's PgBouncer (`/usr/sbin/pgbouncer`, or `pgbouncer` on PATH) in front of a harness
//! server, on a free loopback port, in one pool mode: `transaction` (where LISTEN breaks) or
//! `session`. As root it runs as the `postgres` user, as the harness runs PostgreSQL. It is
//! stopped (SIGTERM, then SIGKILL) and its directory removed on drop, so also when a test fails.

use super::{PATIENCE, Server};
use pgnotify::tempdb;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct PgBouncer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// The pgbouncer binary, if this machine has one.
fn binary() -> PathBuf {
    let debian = PathBuf::from("/usr/sbin/pgbouncer");
    if debian.exists() {
        return debian;
    }
    PathBuf::from("pgbouncer")
}

impl PgBouncer {
    /// Starts PgBouncer in `mode` ("transaction" or "session") in front of `server`, and waits
    /// until it takes connections.
    pub fn start(server: &Server, mode: &str) -> PgBouncer {
        PgBouncer::start_pool(server, mode, 10)
    }

    /// As [`PgBouncer::start`], with at most `pool_size` server connections (`default_pool_size`):
    /// with 1, a client waits while another holds the one server connection in a transaction.
    pub fn start_pool(server: &Server, mode: &str, pool_size: u32) -> PgBouncer {
        let dir = tempfile::Builder::new()
            .prefix("pgnotify-pgbouncer-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        // auth_type = any: no password between the client and PgBouncer, and each database
        // entry logs in to the server as its fixed user (over TCP, which the harness trusts).
        let ini = format!(
            "[databases]\n\
             postgres = host=127.0.0.1 port={} dbname=postgres user={}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = any\n\
             pool_mode = {mode}\n\
             default_pool_size = {pool_size}\n\
             max_client_conn = 50\n\
             server_reset_query =\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             logfile = {}\n\
             pidfile = {}\n",
            server.cluster.port(),
            tempdb::SUPERUSER,
            dir.path().join("pgbouncer.log").display(),
            dir.path().join("pgbouncer.pid").display(),
        );
        let ini_path = dir.path().join("pgbouncer.ini");
        std::fs::write(&ini_path, ini).expect("write pgbouncer.ini");
        let mut cmd = Command::new(binary());
        cmd.arg(&ini_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .expect("a postgres user to run pgbouncer as");
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
                .expect("chmod");
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid)).expect("chown");
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start pgbouncer ({}): {e}", binary().display()));
        let bouncer = PgBouncer { child, port, dir };
        bouncer.wait_ready();
        bouncer
    }

    /// The last lines of PgBouncer's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + PATIENCE;
        let conninfo = format!(
            "host=127.0.0.1 port={} user={} dbname=postgres",
            self.port,
            tempdb::SUPERUSER
        );
        loop {
            if let Ok(mut client) = postgres::Client::connect(&conninfo, postgres::NoTls)
                && client.simple_query("SELECT 1").is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not take connections within {PATIENCE:?}\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
