//! Streaming standbys of a throwaway server, and promoting them: for failover tests.

use super::{CA_NAME, Cluster, SERVER_CERT, append, tls};
use anyhow::{Context, Result, bail};
use std::fs;

impl Cluster {
    /// Makes a streaming standby of this server, started and accepting read-only connections:
    /// `pg_basebackup -R -X stream` over the unix socket, in a directory of its own that is
    /// removed on drop like any `Cluster`'s. A standby of a TLS server serves TLS with a copy
    /// of the same certificate, and [`Cluster::ca`] is a copy of the same CA. Replication is
    /// asynchronous: wait for what the primary wrote to appear.
    pub fn start_standby(&self) -> Result<Cluster> {
        let mut standby = Cluster::prepare(self.bin.clone(), self.owner.clone())?;
        let data = standby.data_dir();
        let out = standby.run_tool(
            "pg_basebackup",
            &[
                "-D",
                &data.to_string_lossy(),
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
                "-d",
                &self.conninfo(),
            ],
        )?;
        if !out.status.success() {
            bail!(
                "pg_basebackup failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // The copied postgresql.conf is the primary's: the lines appended last win.
        append(
            &data.join("postgresql.conf"),
            &[format!(
                "unix_socket_directories = '{}'",
                standby.root.display()
            )],
        )?;
        if self.ca.is_some() {
            standby.copy_tls_from(self)?;
            standby.serve_tls()?;
        }
        standby.launch()?;
        Ok(standby)
    }

    /// Promotes a standby to a primary, and waits until it is one (`pg_ctl promote -w`).
    pub fn promote(&self) -> Result<()> {
        let out = self.pg_ctl(&["promote"])?;
        if !out.status.success() {
            bail!(
                "pg_ctl promote failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Whether the server is a standby still in recovery (`pg_is_in_recovery()`).
    pub fn is_in_recovery(&self) -> Result<bool> {
        Ok(self.psql("SELECT pg_is_in_recovery()")? == "t")
    }

    /// Copies the CA and the server certificate of `primary` into this cluster's `tls/`, so
    /// that this server outlives the primary's directory.
    fn copy_tls_from(&mut self, primary: &Cluster) -> Result<()> {
        let (from, to) = (primary.tls_path(), self.tls_path());
        fs::create_dir_all(&to).with_context(|| format!("could not create {}", to.display()))?;
        for name in [CA_NAME, SERVER_CERT] {
            for ext in ["crt", "key"] {
                let file = format!("{name}.{ext}");
                fs::copy(from.join(&file), to.join(&file))
                    .with_context(|| format!("could not copy {file} from {}", from.display()))?;
            }
        }
        self.ca = Some(tls::CertAuthority::load(&to, CA_NAME)?);
        Ok(())
    }
}
