//! A certificate authority for throwaway servers and their tests: a CA certificate, server and
//! client certificates it signs, and revocation lists. Made with the `openssl` crate, never the
//! openssl command. Keys are EC P-256, signatures SHA-256; certificates are valid from a day
//! ago (a clock a little behind still accepts them) for 30 days.
//!
//! Every file is written by and for this process's user, keys with mode 0600 (libpq refuses
//! a client key others can read). Handing the server's key to the server's owner is
//! `tempdb`'s business.

use anyhow::{Context, Result, bail};
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, CrlNumber, ExtendedKeyUsage, KeyUsage,
    SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509CrlBuilder, X509Name, X509RevokedBuilder};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// How long a certificate or a revocation list is valid, in days.
const VALID_DAYS: i64 = 30;
const DAY: i64 = 86_400;

/// A certificate authority whose certificate and key are the files `DIR/NAME.crt` and
/// `DIR/NAME.key`.
#[derive(Clone)]
pub struct CertAuthority {
    cert: X509,
    key: PKey<Private>,
    cert_path: PathBuf,
}

/// A certificate and its key, as files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What a leaf certificate is for.
enum Leaf<'a> {
    /// A server: these subjectAltName entries, each `DNS:name` or `IP:address`.
    Server(&'a [String]),
    /// A client: this common name (the PostgreSQL user, for `cert` authentication).
    Client,
}

impl CertAuthority {
    /// Makes a new self-signed CA called `name` (its common name too) and writes
    /// `dir/name.crt` and `dir/name.key`; `dir` is created if need be. Two CAs made with this
    /// never trust each other's certificates: use a second one as the "wrong CA".
    pub fn new(dir: &Path, name: &str) -> Result<CertAuthority> {
        fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
        let key = new_key()?;
        let subject = common_name(name)?;
        let mut builder = cert_builder(&subject, &subject, &key)?;
        builder.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        builder.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&builder.x509v3_context(None, None))?;
        builder.append_extension(ski)?;
        builder.sign(&key, MessageDigest::sha256())?;
        let cert = builder.build();
        let cert_path = dir.join(format!("{name}.crt"));
        write_public(&cert_path, &cert.to_pem()?)?;
        write_private(&dir.join(format!("{name}.key")), &key)?;
        Ok(CertAuthority {
            cert,
            key,
            cert_path,
        })
    }

    /// Reads a CA that [`CertAuthority::new`] wrote (or a copy of its two files).
    pub fn load(dir: &Path, name: &str) -> Result<CertAuthority> {
        let cert_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        let read = |path: &Path| {
            fs::read(path).with_context(|| format!("could not read {}", path.display()))
        };
        let cert = X509::from_pem(&read(&cert_path)?)
            .with_context(|| format!("{} holds no certificate", cert_path.display()))?;
        let key = PKey::private_key_from_pem(&read(&key_path)?)
            .with_context(|| format!("{} holds no private key", key_path.display()))?;
        Ok(CertAuthority {
            cert,
            key,
            cert_path,
        })
    }

    /// The CA certificate's file: `sslrootcert` for a client, `ssl_ca_file` for a server.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Issues a server certificate with common name `sans[0]` (`localhost` if `sans` is
    /// empty) and every entry of `sans` as a subjectAltName: an IP address where one parses,
    /// a DNS name otherwise. Writes `dir/name.crt` and `dir/name.key`.
    pub fn issue_server(&self, dir: &Path, name: &str, sans: &[&str]) -> Result<Issued> {
        let cn = sans.first().copied().unwrap_or("localhost");
        let typed: Vec<String> = sans
            .iter()
            .map(|san| match san.parse::<std::net::IpAddr>() {
                Ok(_) => format!("IP:{san}"),
                Err(_) => format!("DNS:{san}"),
            })
            .collect();
        self.issue(dir, name, cn, Leaf::Server(&typed))
    }

    /// Issues a server certificate with common name `cn` and exactly these subjectAltName
    /// entries, each written `DNS:name` or `IP:address` (none: a certificate named by its CN
    /// alone), for tests of how a client matches names. Writes `dir/name.crt` and
    /// `dir/name.key`.
    pub fn issue_server_named(
        &self,
        dir: &Path,
        name: &str,
        cn: &str,
        sans: &[&str],
    ) -> Result<Issued> {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        self.issue(dir, name, cn, Leaf::Server(&sans))
    }

    /// Issues a client certificate with common name `cn` (the PostgreSQL user it logs in as
    /// with `cert` authentication, or `clientcert=verify-full`). Writes `dir/name.crt` and
    /// `dir/name.key`.
    pub fn issue_client(&self, dir: &Path, name: &str, cn: &str) -> Result<Issued> {
        self.issue(dir, name, cn, Leaf::Client)
    }

    /// Writes to `out` a revocation list, signed by this CA, that revokes the certificates in
    /// the files `revoked` (which this CA issued): `sslcrl` for a client, `ssl_crl_file` for a
    /// server. An empty `revoked` makes a list that revokes nothing.
    pub fn write_crl(&self, revoked: &[&Path], out: &Path) -> Result<()> {
        let mut builder = X509CrlBuilder::new()?;
        builder.set_issuer_name(self.cert.subject_name())?;
        builder.set_last_update(&*days_from_now(-1)?)?;
        builder.set_next_update(&*days_from_now(VALID_DAYS)?)?;
        // The authority key identifier is taken from the issuer's certificate; the builder
        // only provides the context it needs.
        let context = X509Builder::new()?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&context.x509v3_context(Some(&self.cert), None))?;
        builder.append_extension(aki)?;
        builder.append_extension(CrlNumber::new(BigNum::from_u32(1)?)?.build()?)?;
        for path in revoked {
            let pem =
                fs::read(path).with_context(|| format!("could not read {}", path.display()))?;
            let cert = X509::from_pem(&pem)
                .with_context(|| format!("{} holds no certificate", path.display()))?;
            let mut entry = X509RevokedBuilder::new()?;
            entry.set_serial_number(cert.serial_number())?;
            entry.set_revocation_date(&*days_from_now(-1)?)?;
            builder.add_revoked(entry.build())?;
        }
        builder.sign(&self.key, MessageDigest::sha256())?;
        let crl = builder
            .build()
            .context("could not build the revocation list")?;
        write_public(out, &crl.to_pem()?)
    }

    fn issue(&self, dir: &Path, name: &str, cn: &str, leaf: Leaf<'_>) -> Result<Issued> {
        fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))?;
        let key = new_key()?;
        let mut builder = cert_builder(&*common_name(cn)?, self.cert.subject_name(), &key)?;
        builder.append_extension(BasicConstraints::new().critical().build()?)?;
        builder.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_agreement()
                .build()?,
        )?;
        let mut usage = ExtendedKeyUsage::new();
        match leaf {
            Leaf::Server(sans) => {
                builder.append_extension(usage.server_auth().build()?)?;
                let mut names = SubjectAlternativeName::new();
                for san in sans {
                    match san.split_once(':') {
                        Some(("IP", address)) => names.ip(address),
                        Some(("DNS", dns)) => names.dns(dns),
                        _ => bail!("a subjectAltName is DNS:name or IP:address, not {san:?}"),
                    };
                }
                if !sans.is_empty() {
                    let san = names.build(&builder.x509v3_context(Some(&self.cert), None))?;
                    builder.append_extension(san)?;
                }
            }
            Leaf::Client => builder.append_extension(usage.client_auth().build()?)?,
        }
        let ski =
            SubjectKeyIdentifier::new().build(&builder.x509v3_context(Some(&self.cert), None))?;
        builder.append_extension(ski)?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&builder.x509v3_context(Some(&self.cert), None))?;
        builder.append_extension(aki)?;
        builder.sign(&self.key, MessageDigest::sha256())?;
        let issued = Issued {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        write_public(&issued.cert, &builder.build().to_pem()?)?;
        write_private(&issued.key, &key)?;
        Ok(issued)
    }
}

fn new_key() -> Result<PKey<Private>> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    Ok(PKey::from_ec_key(EcKey::generate(&group)?)?)
}

fn common_name(cn: &str) -> Result<X509Name> {
    let mut name = X509Name::builder()?;
    name.append_entry_by_nid(Nid::COMMONNAME, cn)?;
    Ok(name.build())
}

/// A version 3 certificate for `key`, with a random serial and the validity period, unsigned
/// and without extensions.
fn cert_builder(
    subject: &openssl::x509::X509NameRef,
    issuer: &openssl::x509::X509NameRef,
    key: &PKey<Private>,
) -> Result<X509Builder> {
    let mut builder = X509Builder::new()?;
    builder.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(120, MsbOption::MAYBE_ZERO, false)?;
    let serial: Asn1Integer = serial.to_asn1_integer()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(subject)?;
    builder.set_issuer_name(issuer)?;
    builder.set_pubkey(key)?;
    builder.set_not_before(&*days_from_now(-1)?)?;
    builder.set_not_after(&*days_from_now(VALID_DAYS)?)?;
    Ok(builder)
}

fn days_from_now(days: i64) -> Result<Asn1Time> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let now = i64::try_from(now).context("the clock is far in the future")?;
    Ok(Asn1Time::from_unix(now + days * DAY)?)
}

fn write_public(path: &Path, pem: &[u8]) -> Result<()> {
    write_file(path, pem, 0o644)
}

fn write_private(path: &Path, key: &PKey<Private>) -> Result<()> {
    write_file(path, &key.private_key_to_pem_pkcs8()?, 0o600)
}

/// Writes `path` afresh with `mode`, also when it existed with another mode.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(data)
    };
    write().with_context(|| format!("could not write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::{CrlStatus, X509Crl, X509StoreContext};

    fn read_cert(path: &Path) -> X509 {
        X509::from_pem(&fs::read(path).unwrap()).unwrap()
    }

    /// Whether `cert` verifies against `ca`.
    fn verifies(ca: &CertAuthority, cert: &X509) -> bool {
        let mut store = X509StoreBuilder::new().unwrap();
        store.add_cert(ca.cert.clone()).unwrap();
        let store = store.build();
        let chain = openssl::stack::Stack::new().unwrap();
        let mut context = X509StoreContext::new().unwrap();
        context
            .init(&store, cert, &chain, |c| c.verify_cert())
            .unwrap()
    }

    #[test]
    fn a_server_certificate_names_its_hosts_and_verifies_against_its_ca_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::new(dir.path(), "ca").unwrap();
        let other = CertAuthority::new(dir.path(), "other").unwrap();
        let issued = ca
            .issue_server(dir.path(), "server", &["localhost", "127.0.0.1"])
            .unwrap();
        let cert = read_cert(&issued.cert);
        let names = cert.subject_alt_names().unwrap();
        let dns: Vec<_> = names.iter().filter_map(|n| n.dnsname()).collect();
        let ips: Vec<_> = names.iter().filter_map(|n| n.ipaddress()).collect();
        assert_eq!(dns, ["localhost"]);
        assert_eq!(ips, [&[127, 0, 0, 1][..]]);
        let cn = cert.subject_name().entries_by_nid(Nid::COMMONNAME).next();
        assert_eq!(cn.unwrap().data().as_slice(), b"localhost");
        assert!(verifies(&ca, &cert));
        assert!(!verifies(&other, &cert));
        let mode = fs::metadata(&issued.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_revocation_list_revokes_the_certificates_named_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::new(dir.path(), "ca").unwrap();
        let alice = ca.issue_client(dir.path(), "alice", "alice").unwrap();
        let bob = ca.issue_client(dir.path(), "bob", "bob").unwrap();
        let crl = dir.path().join("ca.crl");
        ca.write_crl(&[&alice.cert], &crl).unwrap();
        let crl = X509Crl::from_pem(&fs::read(&crl).unwrap()).unwrap();
        assert!(crl.verify(&ca.key).unwrap(), "signed by the CA");
        let revoked = |path: &Path| match crl.get_by_cert(&read_cert(path)) {
            CrlStatus::NotRevoked => false,
            CrlStatus::Revoked(_) | CrlStatus::RemoveFromCrl(_) => true,
        };
        assert!(revoked(&alice.cert));
        assert!(!revoked(&bob.cert));
    }

    #[test]
    fn a_loaded_authority_signs_as_the_one_it_was_written_by() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertAuthority::new(dir.path(), "ca").unwrap();
        let loaded = CertAuthority::load(dir.path(), "ca").unwrap();
        let issued = loaded.issue_client(dir.path(), "c", "c").unwrap();
        assert!(verifies(&ca, &read_cert(&issued.cert)));
    }
}
