//! Precedence and defaults of connection settings, without a server.

use super::*;
use std::fs;

fn env(vars: &[(&str, &str)]) -> Env {
    Env {
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        not_utf8: Vec::new(),
        home: Some(PathBuf::from("/nonexistent-home")),
        os_user: Some("osuser".into()),
    }
}

fn opts(
    dbname: Option<&str>,
    host: Option<&str>,
    port: Option<&str>,
    user: Option<&str>,
) -> ConnOptions {
    ConnOptions {
        dbname: dbname.map(Into::into),
        host: host.map(Into::into),
        port: port.map(Into::into),
        user: user.map(Into::into),
        prompt: PasswordPrompt::Auto,
    }
}

#[test]
fn defaults_are_libpq_defaults() {
    let s = resolve(&ConnOptions::default(), &env(&[])).unwrap();
    assert_eq!(s.user(), "osuser");
    assert_eq!(s.dbname(), "osuser");
    assert_eq!(s.get("application_name"), Some("pgnotify"));
    assert_eq!(s.targets().len(), 1);
    assert!(s.targets()[0].is_socket());
    assert!(SOCKET_DIRS.contains(&s.targets()[0].host.as_str()));
    assert_eq!(s.targets()[0].port, 5432);
}

#[test]
fn environment_fills_what_the_command_line_leaves_open() {
    let e = env(&[
        ("PGHOST", "envhost"),
        ("PGPORT", "6000"),
        ("PGUSER", "envuser"),
        ("PGDATABASE", "envdb"),
        ("PGAPPNAME", "app"),
    ]);
    let s = resolve(&ConnOptions::default(), &e).unwrap();
    assert_eq!(
        (s.targets()[0].host.as_str(), s.targets()[0].port),
        ("envhost", 6000)
    );
    assert_eq!((s.user(), s.dbname()), ("envuser", "envdb"));
    assert_eq!(s.get("application_name"), Some("app"));
    let s = resolve(
        &opts(
            Some("clidb"),
            Some("clihost"),
            Some("7000"),
            Some("cliuser"),
        ),
        &e,
    )
    .unwrap();
    assert_eq!(
        (s.targets()[0].host.as_str(), s.targets()[0].port),
        ("clihost", 7000)
    );
    assert_eq!((s.user(), s.dbname()), ("cliuser", "clidb"));
}

#[test]
fn a_connection_string_in_dbname_overrides_the_flags_before_it() {
    let e = env(&[("PGPORT", "6000")]);
    let s = resolve(
        &opts(
            Some("host=fromdb user=dbuser"),
            Some("flaghost"),
            None,
            Some("flaguser"),
        ),
        &e,
    )
    .unwrap();
    assert_eq!(s.targets()[0].host, "fromdb");
    assert_eq!(s.targets()[0].port, 6000);
    assert_eq!(s.user(), "dbuser");
    let s = resolve(
        &opts(
            Some("postgresql://u@h:1/d?application_name=x"),
            None,
            None,
            None,
        ),
        &e,
    )
    .unwrap();
    assert_eq!(
        (
            s.targets()[0].host.as_str(),
            s.targets()[0].port,
            s.user(),
            s.dbname()
        ),
        ("h", 1, "u", "d")
    );
    assert_eq!(s.get("application_name"), Some("x"));
}

#[test]
fn a_service_sits_between_the_command_line_and_the_environment() {
    let dir = std::env::temp_dir().join(format!("conn-svc-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("svc.conf");
    fs::write(&file, "[mine]\nhost=svchost\nport=7777\ndbname=svcdb\n").unwrap();
    let file = file.to_str().unwrap();
    let e = env(&[
        ("PGSERVICEFILE", file),
        ("PGSERVICE", "mine"),
        ("PGHOST", "envhost"),
        ("PGUSER", "envuser"),
    ]);
    let s = resolve(&opts(None, None, Some("1234"), None), &e).unwrap();
    assert_eq!(s.targets()[0].host, "svchost");
    assert_eq!(s.targets()[0].port, 1234);
    assert_eq!((s.user(), s.dbname()), ("envuser", "svcdb"));
    let e2 = env(&[("PGSERVICEFILE", file)]);
    let s = resolve(&opts(Some("service=mine"), None, None, None), &e2).unwrap();
    assert_eq!(s.dbname(), "svcdb");
    let err = resolve(&opts(Some("service=other"), None, None, None), &e2).unwrap_err();
    assert!(
        err.to_string()
            .contains("definition of service \"other\" not found")
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn host_and_port_lists_pair_up() {
    let s = resolve(
        &opts(None, Some("a,b,/sock"), Some("1,2,3"), None),
        &env(&[]),
    )
    .unwrap();
    let got: Vec<_> = s
        .targets()
        .iter()
        .map(|t| (t.host.as_str(), t.port))
        .collect();
    assert_eq!(got, [("a", 1), ("b", 2), ("/sock", 3)]);
    let s = resolve(&opts(None, Some("a,b"), Some("9"), None), &env(&[])).unwrap();
    assert!(s.targets().iter().all(|t| t.port == 9));
    assert!(resolve(&opts(None, Some("a,b,c"), Some("1,2"), None), &env(&[])).is_err());
}

#[test]
fn malformed_settings_are_usage_errors_and_unsupported_ones_connection_errors() {
    let usage = |e: &anyhow::Error| e.is::<UsageError>();
    let connection = |e: &anyhow::Error| e.is::<ConnectionError>();
    type Kind = fn(&anyhow::Error) -> bool;
    let cases: [(ConnOptions, Env, &str, Kind); 7] = [
        (
            opts(None, None, Some("abc"), None),
            env(&[]),
            "invalid port number: \"abc\"",
            usage,
        ),
        (
            opts(Some("sslmode=bogus"), None, None, None),
            env(&[]),
            "invalid sslmode",
            usage,
        ),
        (
            opts(Some("nonsense=1"), None, None, None),
            env(&[]),
            "invalid connection option",
            usage,
        ),
        (
            opts(Some("sslmode=verify"), None, None, None),
            env(&[]),
            "invalid sslmode value: \"verify\"",
            usage,
        ),
        (
            opts(None, None, None, None),
            env(&[("PGSSLROOTCERT", "system"), ("PGSSLMODE", "require")]),
            "weak sslmode \"require\" may not be used with sslrootcert=system",
            usage,
        ),
        (
            opts(Some("sslcertmode=require"), None, None, None),
            env(&[]),
            "sslcertmode=require is not supported",
            connection,
        ),
        (
            opts(None, None, None, None),
            env(&[("PGREQUIREAUTH", "scram-sha-256")]),
            "require_auth is not supported",
            connection,
        ),
    ];
    for (o, e, needle, kind) in cases {
        let err = resolve(&o, &e).unwrap_err();
        assert!(kind(&err), "{err}: wrong kind");
        assert!(err.to_string().contains(needle), "{err} lacks {needle}");
    }
}

#[test]
fn targets_are_described_like_psql() {
    let sock = Target {
        host: "/tmp".into(),
        hostaddr: None,
        port: 5432,
        defaulted: false,
    };
    assert_eq!(sock.describe(), "server on socket \"/tmp/.s.PGSQL.5432\"");
    let tcp = Target {
        host: "db".into(),
        hostaddr: Some("10.0.0.1".parse().unwrap()),
        port: 1,
        defaulted: false,
    };
    assert_eq!(tcp.describe(), "server at \"db\" (10.0.0.1), port 1");
}

#[test]
fn empty_flags_count_as_unset_and_foreign_encodings_are_ignored() {
    let e = env(&[
        ("PGUSER", "envuser"),
        ("PGHOST", "envhost"),
        ("PGCLIENTENCODING", "LATIN1"),
    ]);
    let s = resolve(&opts(Some(""), Some(""), None, Some("")), &e).unwrap();
    assert_eq!(
        (s.user(), s.targets()[0].host.as_str()),
        ("envuser", "envhost")
    );
    assert_eq!(s.get("client_encoding"), None);
}

#[test]
fn a_pg_variable_that_is_not_utf8_is_refused_not_ignored() {
    let mut e = env(&[("PGPORT", "6000")]);
    e.not_utf8 = vec!["PGHOST".into(), "PGNOTIFY_PG_BINDIR".into()];
    let err = resolve(&ConnOptions::default(), &e).unwrap_err();
    assert_eq!(crate::exit::for_error(&err), crate::exit::Exit::Usage);
    assert!(
        err.to_string().contains("PGHOST is not valid UTF-8"),
        "{err}"
    );
    // One that a flag overrides is not read, as in libpq.
    let flag = ConnOptions {
        host: Some("db".into()),
        ..ConnOptions::default()
    };
    assert!(resolve(&flag, &e).is_ok());
    // A variable pgnotify does not read may hold anything.
    e.not_utf8 = vec!["PGNOTIFY_PG_BINDIR".into()];
    assert!(resolve(&ConnOptions::default(), &e).is_ok());
}

#[test]
fn each_setting_says_where_it_came_from() {
    let dir = std::env::temp_dir().join(format!("conn-src-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("svc.conf");
    fs::write(&file, "[mine]\nport=7777\npassword=fromservice\n").unwrap();
    let e = env(&[
        ("PGSERVICEFILE", file.to_str().unwrap()),
        ("PGSERVICE", "mine"),
        ("PGHOST", "envhost"),
        ("PGAPPNAME", "envapp"),
    ]);
    let s = resolve(&opts(Some("dbname=cidb"), None, None, Some("flaguser")), &e).unwrap();
    assert_eq!(s.source("user"), Some(&Source::Flag("-U")));
    assert_eq!(s.source("dbname"), Some(&Source::Conninfo));
    assert_eq!(s.source("port"), Some(&Source::Service("mine".into())));
    assert_eq!(s.source("password"), Some(&Source::Service("mine".into())));
    assert_eq!(s.source("service"), Some(&Source::Env("PGSERVICE")));
    assert_eq!(s.source("host"), Some(&Source::Env("PGHOST")));
    assert_eq!(
        s.source("application_name"),
        Some(&Source::Env("PGAPPNAME"))
    );
    let s = resolve(&opts(Some("plaindb"), None, None, None), &env(&[])).unwrap();
    assert_eq!(s.source("dbname"), Some(&Source::Flag("-d")));
    assert_eq!(s.source("user"), Some(&Source::Default));
    assert_eq!(s.source("application_name"), Some(&Source::Default));
    assert_eq!(s.source("password"), None);
    fs::remove_dir_all(&dir).unwrap();
}
