//! TLS with libpq's meanings, on OpenSSL (the library libpq itself uses), through
//! `tokio-openssl`.
//!
//! The settings (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`, `sslpassword`, `sslcrl`,
//! `sslcrldir`, `sslsni`, `sslcertmode`, `ssl_min_protocol_version`,
//! `ssl_max_protocol_version`, `sslnegotiation`) are read as libpq reads them
//! ([`TlsSettings::from_params`]). Each connection attempt that may use TLS gets a context
//! ([`connector`]) that trusts exactly what libpq would trust: the root certificate file, or
//! the system's roots for `sslrootcert=system`, never both. (`postgres-openssl` starts from
//! `SslConnector::builder`, which loads the whole system store, 23 ms a connection, and trusts
//! it beside any `sslrootcert`.)
//!
//! What the handshake met is kept in an [`Outcome`], so that a refusal can be told the way
//! psql tells it: which certificate was not trusted and why, or which names a certificate has
//! that do not match the host.

use crate::sanitize::escape_controls;
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslOptions, SslVerifyMode,
    SslVersion,
};
use openssl::x509::store::X509Lookup;
use openssl::x509::verify::{X509CheckFlags, X509VerifyFlags};
use openssl::x509::{X509Ref, X509StoreContextRef};
use std::collections::BTreeMap;
use std::error::Error;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio_openssl::SslStream;
use tokio_postgres::Socket;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use zeroize::Zeroizing;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Option<SslMode> {
        Some(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the trusted roots come from.
#[derive(Clone, Debug)]
enum Roots {
    /// A file (libpq's default `~/.postgresql/root.crt`); `None`: no home to look in.
    File(Option<PathBuf>),
    /// `sslrootcert=system`: the system's store (OpenSSL's default paths).
    System,
}

/// The TLS settings of a connection, as libpq reads them. No secrets: `sslpassword` stays in
/// the settings and is read only when a key is loaded.
#[derive(Clone, Debug)]
pub(crate) struct TlsSettings {
    pub(crate) mode: SslMode,
    roots: Roots,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    crl: Option<Crl>,
    crldir: Option<PathBuf>,
    send_cert: bool,
    sni: bool,
    min: Option<SslVersion>,
    max: Option<SslVersion>,
    /// `sslnegotiation=direct`: the handshake starts at once, without asking first.
    pub(crate) direct: bool,
}

/// A setting that cannot be used as given (the message is libpq's where libpq has one).
pub(crate) enum Invalid {
    /// Malformed: a bad value.
    Malformed(String),
    /// Well formed, but not something pgnotify can do.
    Unsupported(String),
}

impl TlsSettings {
    /// Reads the TLS keys of resolved settings; `home` locates the `~/.postgresql` defaults.
    pub(crate) fn from_params(
        params: &BTreeMap<String, String>,
        home: Option<&Path>,
    ) -> Result<TlsSettings, Invalid> {
        let get = |key: &str| {
            params
                .get(key)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };
        let in_home = |file: &str| home.map(|h| h.join(".postgresql").join(file));
        let roots = match get("sslrootcert") {
            Some("system") => Roots::System,
            Some(file) => Roots::File(Some(PathBuf::from(file))),
            None => Roots::File(in_home("root.crt")),
        };
        let mode = match get("sslmode") {
            Some(value) => SslMode::parse(value)
                .ok_or_else(|| Invalid::Malformed(format!("invalid sslmode value: \"{value}\"")))?,
            // requiressl=1, the old spelling of sslmode=require.
            None if get("requiressl") == Some("1") => SslMode::Require,
            None if matches!(roots, Roots::System) => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if matches!(roots, Roots::System) && mode != SslMode::VerifyFull {
            return Err(Invalid::Malformed(format!(
                "weak sslmode \"{}\" may not be used with sslrootcert=system (use \"verify-full\")",
                mode.name()
            )));
        }
        let direct = match get("sslnegotiation") {
            None | Some("postgres") => false,
            Some("direct") => true,
            Some(other) => {
                return Err(Invalid::Malformed(format!(
                    "invalid sslnegotiation value: \"{other}\""
                )));
            }
        };
        if direct && mode < SslMode::Require {
            return Err(Invalid::Malformed(format!(
                "weak sslmode \"{}\" may not be used with sslnegotiation=direct \
                 (use \"require\", \"verify-ca\", or \"verify-full\")",
                mode.name()
            )));
        }
        let send_cert = match get("sslcertmode") {
            None | Some("allow") => true,
            Some("disable") => false,
            Some("require") => {
                return Err(Invalid::Unsupported(
                    "sslcertmode=require is not supported by pgnotify; \
                     use sslcertmode=allow (the default)"
                        .into(),
                ));
            }
            Some(other) => {
                return Err(Invalid::Malformed(format!(
                    "invalid sslcertmode value: \"{other}\""
                )));
            }
        };
        let version = |key: &str, default: Option<SslVersion>| match get(key) {
            None => Ok(default),
            Some("TLSv1") => Ok(Some(SslVersion::TLS1)),
            Some("TLSv1.1") => Ok(Some(SslVersion::TLS1_1)),
            Some("TLSv1.2") => Ok(Some(SslVersion::TLS1_2)),
            Some("TLSv1.3") => Ok(Some(SslVersion::TLS1_3)),
            Some(other) => Err(Invalid::Malformed(format!(
                "invalid {key} value: \"{other}\""
            ))),
        };
        let min = version("ssl_min_protocol_version", Some(SslVersion::TLS1_2))?;
        let max = version("ssl_max_protocol_version", None)?;
        if let (Some(min), Some(max)) = (min, max)
            && rank(min) > rank(max)
        {
            return Err(Invalid::Malformed(
                "invalid SSL protocol version range".into(),
            ));
        }
        Ok(TlsSettings {
            mode,
            roots,
            cert: get("sslcert")
                .map(PathBuf::from)
                .or_else(|| in_home("postgresql.crt")),
            key: get("sslkey")
                .map(PathBuf::from)
                .or_else(|| in_home("postgresql.key")),
            crl: get("sslcrl")
                .map(|f| Crl::Given(PathBuf::from(f)))
                .or_else(|| in_home("root.crl").map(Crl::Default)),
            crldir: get("sslcrldir").map(PathBuf::from),
            send_cert,
            sni: get("sslsni") != Some("0"),
            min,
            max,
            direct,
        })
    }
}

fn rank(version: SslVersion) -> u8 {
    match version {
        SslVersion::TLS1 => 1,
        SslVersion::TLS1_1 => 2,
        SslVersion::TLS1_2 => 3,
        _ => 4,
    }
}

/// Where a revocation list is looked for.
#[derive(Clone, Debug)]
enum Crl {
    /// `sslcrl`: it must be there.
    Given(PathBuf),
    /// `~/.postgresql/root.crl`: used when it is there.
    Default(PathBuf),
}

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verify {
    /// Nothing (libpq's `require`, `prefer` and `allow` without a root certificate file).
    Nothing,
    /// The chain, up to a trusted root (`verify-ca`; the weaker modes with a root file).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

/// What a connection attempt's handshake met, read after the attempt.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The server agreed to TLS and a handshake began.
    pub(crate) used: bool,
    /// Why the server's certificate was refused, in words.
    pub(crate) refused: Option<String>,
    /// psql's "SSL connection (...)" description, once a handshake succeeded.
    pub(crate) established: Option<String>,
    /// The client certificate offered, if one was (its file).
    pub(crate) client_cert: Option<PathBuf>,
    /// Why TLS could not be set up once the server agreed to it (a key others may read...).
    pub(crate) setup: Option<String>,
    /// How much of the server's certificate was checked, once a handshake succeeded.
    pub(crate) verified: Option<Verify>,
}

/// The TLS side of one connection attempt: what `tokio-postgres` calls to start TLS.
pub(crate) struct Tls {
    /// `None` for a connection that never uses TLS: OpenSSL is then never even initialised
    /// (that alone would add 5 MB to the resident size).
    plan: Option<Arc<Plan>>,
    pub(crate) outcome: Arc<Mutex<Outcome>>,
}

/// What TLS is set up from, once the server agrees to it: as in libpq, the files are read
/// only then, so a server that declines TLS never sees a TLS file's trouble, and `prefer`
/// takes such trouble as a failed TLS attempt.
struct Plan {
    settings: TlsSettings,
    mode: SslMode,
    password: Option<Zeroizing<String>>,
}

/// A context built for one attempt, and how it checks the server.
struct Built {
    context: SslContext,
    verify: Verify,
    /// Where the roots came from, for messages.
    roots: String,
    client_cert: Option<PathBuf>,
}

/// The TLS side of an attempt in `mode` (the effective one: `allow` retries with `require`).
pub(crate) fn connector(settings: &TlsSettings, mode: SslMode, password: Option<&str>) -> Tls {
    Tls {
        plan: Some(Arc::new(Plan {
            settings: settings.clone(),
            mode,
            password: password.map(|p| Zeroizing::new(p.to_owned())),
        })),
        outcome: Arc::default(),
    }
}

/// The TLS side of an attempt that never uses TLS (`sslmode=disable`, a unix socket).
pub(crate) fn plain() -> Tls {
    Tls {
        plan: None,
        outcome: Arc::default(),
    }
}

/// Builds the TLS context for an attempt. Errors are one line, libpq's where libpq has one:
/// a missing root certificate file, a private key readable by others, a key that does not
/// decrypt.
fn build(settings: &TlsSettings, mode: SslMode, password: Option<&str>) -> Result<Built, String> {
    let stack = |what: String| move |e: ErrorStack| format!("{what}: {}", reasons(&e));
    let mut ctx = SslContextBuilder::new(SslMethod::tls_client())
        .map_err(stack("could not create an SSL context".into()))?;
    ctx.set_options(SslOptions::NO_COMPRESSION | SslOptions::NO_TICKET);
    ctx.set_min_proto_version(settings.min).map_err(stack(
        "could not set the minimum SSL protocol version".into(),
    ))?;
    ctx.set_max_proto_version(settings.max).map_err(stack(
        "could not set the maximum SSL protocol version".into(),
    ))?;
    // P-256 first: it is PostgreSQL's default ssl_ecdh_curve, so the key share offered is the
    // one the server takes, without a HelloRetryRequest round trip (X25519, OpenSSL's first
    // choice, costs one with every default server).
    ctx.set_groups_list("P-256:X25519:P-384:P-521")
        .map_err(stack("could not set the key exchange groups".into()))?;
    // As libpq 17 does: servers that take direct TLS require the "postgresql" ALPN protocol.
    ctx.set_alpn_protos(b"\x0apostgresql")
        .map_err(stack("could not set the ALPN protocol".into()))?;
    let have_cert = match settings.cert.as_deref().filter(|_| settings.send_cert) {
        Some(cert) => match std::fs::metadata(cert) {
            Ok(_) => {
                ctx.set_certificate_chain_file(cert).map_err(stack(format!(
                    "could not read certificate file {}",
                    quote_value(&cert.display().to_string())
                )))?;
                true
            }
            Err(e) if is_absent(&e) => false,
            Err(e) => {
                return Err(format!(
                    "could not open certificate file {}: {}",
                    quote_value(&cert.display().to_string()),
                    crate::sanitize::strip_os_error(&e.to_string())
                ));
            }
        },
        None => false,
    };
    let (have_roots, roots) = match &settings.roots {
        Roots::System => {
            ctx.set_default_verify_paths()
                .map_err(stack("could not load the system root certificates".into()))?;
            (
                true,
                "the system's root certificates (sslrootcert=system)".to_owned(),
            )
        }
        Roots::File(Some(file)) if file.exists() => {
            let shown = quote_value(&file.display().to_string());
            ctx.set_ca_file(file).map_err(stack(format!(
                "could not read root certificate file {shown}"
            )))?;
            (true, format!("root certificate file {shown}"))
        }
        Roots::File(Some(file)) if mode >= SslMode::VerifyCa => {
            return Err(format!(
                "root certificate file {} does not exist; either provide the file, use the \
                 system's trusted roots with sslrootcert=system, or change sslmode to disable \
                 server certificate verification",
                quote_value(&file.display().to_string())
            ));
        }
        Roots::File(None) if mode >= SslMode::VerifyCa => {
            return Err(
                "could not get home directory to locate root certificate file; \
                        either provide the file or change sslmode to disable server \
                        certificate verification"
                    .into(),
            );
        }
        Roots::File(_) => (false, String::new()),
    };
    // Revocation lists, as libpq reads them: `sslcrl`, else ~/.postgresql/root.crl when no
    // `sslcrldir` is given, loaded when the file exists; `sslcrldir` always, so that a
    // directory that is not there fails closed (no list for the chain: not trusted). Unlike
    // libpq, a list that exists but cannot be read is an error, never ignored, and so is an
    // `sslcrl` named that does not exist.
    if have_roots {
        let crl = match (&settings.crl, &settings.crldir) {
            (Some(Crl::Given(file)), _) => {
                if !file.exists() {
                    return Err(format!(
                        "SSL CRL file {} does not exist",
                        quote_value(&file.display().to_string())
                    ));
                }
                Some(file.as_path())
            }
            (Some(Crl::Default(file)), None) => Some(file.as_path()).filter(|f| f.exists()),
            _ => None,
        };
        if crl.is_some() || settings.crldir.is_some() {
            let store = ctx.cert_store_mut();
            if let Some(crl) = crl {
                let shown = quote_value(&crl.display().to_string());
                let path = utf8(crl)?;
                store
                    .add_lookup(X509Lookup::file())
                    .and_then(|lookup| lookup.load_crl_file(path, SslFiletype::PEM))
                    .map_err(stack(format!("could not read SSL CRL file {shown}")))?;
            }
            if let Some(dir) = &settings.crldir {
                let shown = quote_value(&dir.display().to_string());
                let path = utf8(dir)?;
                store
                    .add_lookup(X509Lookup::hash_dir())
                    .and_then(|lookup| lookup.add_dir(path, SslFiletype::PEM))
                    .map_err(stack(format!("could not use SSL CRL directory {shown}")))?;
            }
            store
                .set_flags(X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL)
                .map_err(stack("could not turn on CRL checking".into()))?;
        }
    }
    if have_cert && let Some(key) = &settings.key {
        load_key(&mut ctx, key, password)?;
    }
    let client_cert = settings.cert.clone().filter(|_| have_cert);
    let verify = match mode {
        SslMode::VerifyFull => Verify::Full,
        SslMode::VerifyCa => Verify::Chain,
        _ if have_roots => Verify::Chain,
        _ => Verify::Nothing,
    };
    Ok(Built {
        context: ctx.build(),
        verify,
        roots,
        client_cert,
    })
}

/// Loads the client's private key, refusing one that others may read, as libpq does.
fn load_key(ctx: &mut SslContextBuilder, key: &Path, password: Option<&str>) -> Result<(), String> {
    let shown = quote_value(&key.display().to_string());
    let meta = match std::fs::metadata(key) {
        Ok(meta) => meta,
        Err(e) if is_absent(&e) => {
            return Err(format!(
                "certificate present, but not private key file {shown}"
            ));
        }
        Err(e) => {
            return Err(format!(
                "could not open private key file {shown}: {}",
                crate::sanitize::strip_os_error(&e.to_string())
            ));
        }
    };
    if !meta.is_file() {
        return Err(format!("private key file {shown} is not a regular file"));
    }
    let mode = meta.mode();
    let too_open = match meta.uid() {
        0 => mode & 0o037 != 0,
        _ => mode & 0o077 != 0,
    };
    if too_open {
        return Err(format!(
            "private key file {shown} has group or world access; file must have permissions \
             u=rw (0600) or less if owned by the current user, or permissions u=rw,g=r (0640) \
             or less if owned by root"
        ));
    }
    let pem = std::fs::read(key).map_err(|e| {
        format!(
            "could not open private key file {shown}: {}",
            crate::sanitize::strip_os_error(&e.to_string())
        )
    })?;
    // libpq's default: the key's passphrase is sslpassword, or empty; never a prompt.
    let pkey = PKey::private_key_from_pem_callback(&pem, |buf| {
        let given = password.unwrap_or_default().as_bytes();
        let n = given.len().min(buf.len());
        buf[..n].copy_from_slice(&given[..n]);
        Ok(n)
    })
    .map_err(|e| match password {
        None if is_encrypted(&pem) => format!(
            "could not load private key file {shown}: it is encrypted and no sslpassword \
             was given"
        ),
        _ => format!("could not load private key file {shown}: {}", reasons(&e)),
    })?;
    ctx.set_private_key(&pkey)
        .map_err(|e| format!("could not load private key file {shown}: {}", reasons(&e)))?;
    ctx.check_private_key().map_err(|e| {
        format!(
            "certificate does not match private key file {shown}: {}",
            reasons(&e)
        )
    })
}

fn is_encrypted(pem: &[u8]) -> bool {
    let text = String::from_utf8_lossy(pem);
    text.contains("ENCRYPTED") || text.contains("Proc-Type: 4,ENCRYPTED")
}

fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// OpenSSL's file functions take UTF-8 paths without NUL (the settings are UTF-8 already).
fn utf8(path: &Path) -> Result<&str, String> {
    path.to_str()
        .filter(|p| !p.contains('\0'))
        .ok_or_else(|| format!("the path {} cannot be used", path.display()))
}

/// The reasons in an OpenSSL error stack, as libpq words them ("certificate verify failed"),
/// without OpenSSL's codes and source locations.
pub(crate) fn reasons(stack: &ErrorStack) -> String {
    let mut all: Vec<String> = Vec::new();
    for e in stack.errors() {
        let reason = e
            .reason()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("error code {}", e.code()));
        if !all.contains(&reason) {
            all.push(reason);
        }
    }
    match all.is_empty() {
        true => "no SSL error reported".into(),
        false => all.join(": "),
    }
}

impl MakeTlsConnect<Socket> for Tls {
    type Stream = TlsStream;
    type TlsConnect = Handshake;
    type Error = ErrorStack;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Handshake, ErrorStack> {
        Ok(Handshake {
            plan: self.plan.clone(),
            domain: domain.to_owned(),
            outcome: Arc::clone(&self.outcome),
        })
    }
}

/// A connection's TLS session, configured for `domain` (the host name, or an address).
fn configure(
    built: &Built,
    sni: bool,
    domain: &str,
    outcome: &Arc<Mutex<Outcome>>,
) -> Result<Ssl, ErrorStack> {
    let mut ssl = Ssl::new(&built.context)?;
    let ip = domain.parse::<IpAddr>().ok();
    // SNI names a host, never an address (RFC 6066), as libpq does.
    if sni && ip.is_none() && !domain.is_empty() {
        ssl.set_hostname(domain)?;
    }
    if built.verify == Verify::Full && ip.is_none() {
        let param = ssl.param_mut();
        param.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
        param.set_host(domain)?;
    }
    if built.verify == Verify::Nothing {
        ssl.set_verify(SslVerifyMode::NONE);
        return Ok(ssl);
    }
    // An address is checked here, as libpq checks it: against the certificate's IP
    // addresses, or its common name when it has none (OpenSSL's own check never reads the CN).
    let address = ip.filter(|_| built.verify == Verify::Full);
    let outcome = Arc::clone(outcome);
    let host = domain.to_owned();
    let roots = built.roots.clone();
    ssl.set_verify_callback(SslVerifyMode::PEER, move |ok, ctx| {
        let refused = match (ok, address, ctx.error_depth()) {
            (false, _, _) => Some(refusal(ctx, &host, &roots)),
            (true, Some(ip), 0) => ctx
                .current_cert()
                .filter(|cert| !address_matches(cert, ip, &host))
                .map(|cert| mismatch(cert, &host)),
            _ => None,
        };
        let Some(why) = refused else {
            return true;
        };
        let mut outcome = lock(&outcome);
        if outcome.refused.is_none() {
            outcome.refused = Some(why);
        }
        false
    });
    Ok(ssl)
}

/// libpq's check of an address: one of the certificate's IP addresses, or a DNS name written
/// as the host is, or, when it has no IP address, its common name written so.
fn address_matches(cert: &X509Ref, ip: IpAddr, host: &str) -> bool {
    let sans = cert.subject_alt_names();
    let mut has_address = false;
    for san in sans.iter().flat_map(|sans| sans.iter()) {
        if let Some(address) = san.ipaddress().and_then(san_address) {
            has_address = true;
            if address == ip {
                return true;
            }
        } else if san
            .dnsname()
            .is_some_and(|dns| dns.eq_ignore_ascii_case(host))
        {
            return true;
        }
    }
    !has_address && common_name(cert).is_some_and(|cn| cn.eq_ignore_ascii_case(host))
}

fn san_address(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

/// psql's message for a certificate that is not for `host`, naming the names it is for.
fn mismatch(cert: &X509Ref, host: &str) -> String {
    let names = cert_names(cert);
    let names = match names.is_empty() {
        true => "(no names)".to_owned(),
        false => names
            .iter()
            .map(|n| quote_value(n))
            .collect::<Vec<_>>()
            .join(", "),
    };
    format!(
        "server certificate for {names} does not match host name {}",
        quote_value(host)
    )
}

/// Why a certificate was refused, in psql's words, naming what psql would name.
fn refusal(ctx: &X509StoreContextRef, host: &str, roots: &str) -> String {
    const HOSTNAME_MISMATCH: i32 = 62;
    const IP_ADDRESS_MISMATCH: i32 = 64;
    let error = ctx.error();
    if matches!(error.as_raw(), HOSTNAME_MISMATCH | IP_ADDRESS_MISMATCH)
        && let Some(cert) = ctx.current_cert()
    {
        return mismatch(cert, host);
    }
    // Named by the server's own certificate, whichever link of its chain failed.
    let subject = ctx
        .chain()
        .and_then(|chain| chain.get(0))
        .or(ctx.current_cert())
        .and_then(common_name)
        .map(|cn| format!(" for {}", quote_value(&cn)))
        .unwrap_or_default();
    format!(
        "server certificate{subject} not trusted: {} (checked against {roots})",
        error.error_string()
    )
}

/// The names a certificate is for: its subjectAltName entries, or its CN when it has none.
fn cert_names(cert: &X509Ref) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(sans) = cert.subject_alt_names() {
        for san in sans.iter() {
            if let Some(dns) = san.dnsname() {
                names.push(dns.to_owned());
            } else if let Some(ip) = san.ipaddress().and_then(san_address) {
                names.push(ip.to_string());
            }
        }
    }
    if names.is_empty() {
        names.extend(common_name(cert));
    }
    names
}

fn common_name(cert: &X509Ref) -> Option<String> {
    let entry = cert.subject_name().entries_by_nid(Nid::COMMONNAME).next()?;
    entry.data().to_string().ok()
}

fn lock(outcome: &Mutex<Outcome>) -> std::sync::MutexGuard<'_, Outcome> {
    outcome.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One handshake, begun once the server agreed to TLS.
pub(crate) struct Handshake {
    /// `None`: this attempt was never to use TLS (`tokio-postgres` does not start it then).
    plan: Option<Arc<Plan>>,
    domain: String,
    outcome: Arc<Mutex<Outcome>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> TlsConnect<S> for Handshake {
    type Stream = TlsStream<S>;
    type Error = Box<dyn Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<TlsStream<S>, Self::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        lock(&self.outcome).used = true;
        Box::pin(async move {
            let plan = self
                .plan
                .ok_or("TLS was not configured for this connection")?;
            let password = plan.password.as_ref().map(|p| p.as_str());
            let built = build(&plan.settings, plan.mode, password).inspect_err(|why| {
                lock(&self.outcome).setup = Some(why.clone());
            })?;
            lock(&self.outcome)
                .client_cert
                .clone_from(&built.client_cert);
            let ssl = configure(&built, plan.settings.sni, &self.domain, &self.outcome)?;
            // Buffered: a TLS record is read in one system call, not a header and a body.
            let mut stream = SslStream::new(ssl, BufReader::with_capacity(16 << 10, stream))?;
            Pin::new(&mut stream).connect().await?;
            let ssl = stream.ssl();
            let mut outcome = lock(&self.outcome);
            outcome.established = Some(format!(
                "SSL connection (protocol: {}, cipher: {})",
                ssl.version_str(),
                ssl.current_cipher().map_or("unknown", |c| c.name())
            ));
            outcome.verified = Some(built.verify);
            drop(outcome);
            Ok(TlsStream(stream))
        })
    }
}

/// An encrypted connection to the server (over `tokio-postgres`'s socket, or the listener's).
pub(crate) struct TlsStream<S = Socket>(SslStream<BufReader<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for TlsStream<S> {
    /// `tls-server-end-point` (RFC 5929), for SCRAM-SHA-256-PLUS: a hash of the server's
    /// certificate, with the hash of its signature algorithm (SHA-256 for MD5 and SHA-1).
    fn channel_binding(&self) -> ChannelBinding {
        let end_point = self.0.ssl().peer_certificate().and_then(|cert| {
            let nid = cert.signature_algorithm().object().nid();
            let digest = match nid.signature_algorithms()?.digest {
                Nid::MD5 | Nid::SHA1 => MessageDigest::sha256(),
                other => MessageDigest::from_nid(other)?,
            };
            cert.digest(digest).ok().map(|d| d.to_vec())
        });
        match end_point {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

/// The reasons OpenSSL gave inside a failed connection's error, if TLS failed it.
pub(crate) fn tls_reason(e: &(dyn Error + 'static)) -> Option<String> {
    let mut source = Some(e);
    while let Some(cause) = source {
        if let Some(ssl) = cause.downcast_ref::<openssl::ssl::Error>()
            && let Some(stack) = ssl.ssl_error()
        {
            return Some(reasons(stack));
        }
        if let Some(stack) = cause.downcast_ref::<ErrorStack>() {
            return Some(reasons(stack));
        }
        if let Some(io) = cause.downcast_ref::<io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(reason) = tls_reason(inner)
        {
            return Some(reason);
        }
        source = cause.source();
    }
    None
}

/// A file name or certificate name in a message: quoted, control characters escaped.
fn quote_value(text: &str) -> String {
    format!("\"{}\"", escape_controls(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<TlsSettings, Invalid> {
        let params = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TlsSettings::from_params(&params, Some(Path::new("/home/u")))
    }

    fn message(r: Result<TlsSettings, Invalid>) -> String {
        match r {
            Ok(s) => panic!("accepted: {s:?}"),
            Err(Invalid::Malformed(m) | Invalid::Unsupported(m)) => m,
        }
    }

    #[test]
    fn sslmode_defaults_as_libpq() {
        assert_eq!(settings(&[]).ok().map(|s| s.mode), Some(SslMode::Prefer));
        assert_eq!(
            settings(&[("requiressl", "1")]).ok().map(|s| s.mode),
            Some(SslMode::Require)
        );
        assert_eq!(
            settings(&[("sslrootcert", "system")]).ok().map(|s| s.mode),
            Some(SslMode::VerifyFull)
        );
        let s = settings(&[]).ok().expect("defaults");
        assert!(
            matches!(s.roots, Roots::File(Some(ref f)) if f == Path::new("/home/u/.postgresql/root.crt"))
        );
        assert_eq!(
            s.key.as_deref(),
            Some(Path::new("/home/u/.postgresql/postgresql.key"))
        );
    }

    #[test]
    fn weak_combinations_are_refused_with_libpq_words() {
        assert_eq!(
            message(settings(&[
                ("sslrootcert", "system"),
                ("sslmode", "require")
            ])),
            "weak sslmode \"require\" may not be used with sslrootcert=system (use \"verify-full\")"
        );
        assert!(
            message(settings(&[("sslnegotiation", "direct")]))
                .starts_with("weak sslmode \"prefer\"")
        );
        assert_eq!(
            message(settings(&[("sslmode", "verify")])),
            "invalid sslmode value: \"verify\""
        );
        assert_eq!(
            message(settings(&[
                ("ssl_min_protocol_version", "TLSv1.3"),
                ("ssl_max_protocol_version", "TLSv1.2")
            ])),
            "invalid SSL protocol version range"
        );
    }
}
