//! The configuration's tests: defaults, the example file, overrides and
//! every refusal's message.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, "test.toml", std::iter::empty())
}

#[test]
fn defaults_run_with_no_file() {
    let c = Config::defaults();
    assert_eq!(c.http.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.data_dir, PathBuf::from("./racklift-data"));
    assert_eq!(c.database.url, "sqlite://./racklift-data/racklift.db");
    assert_eq!(
        c.secrets.key_file,
        PathBuf::from("./racklift-data/secret.key")
    );
    assert!(!c.dhcp.enabled && !c.tftp.enabled);
    assert_eq!(c.tftp.listen.to_string(), "0.0.0.0:69");
    if Path::new(IPXE_DIR).is_dir() {
        assert_eq!(c.tftp.root, PathBuf::from(IPXE_DIR));
    } else {
        assert_eq!(c.tftp.root, PathBuf::from("./racklift-data/tftp"));
    }
    assert_eq!(c.conductor.timeouts.inspect, Duration::from_secs(1800));
}

#[test]
fn the_shipped_example_parses_and_matches_the_defaults_it_documents() {
    let text = include_str!("../../racklift.example.toml");
    let c = parse(text).expect("racklift.example.toml is valid");
    let d = Config::defaults();
    assert_eq!(c.http.listen, d.http.listen);
    assert_eq!(c.conductor.workers, d.conductor.workers);
    assert_eq!(c.conductor.timeouts.deploy, d.conductor.timeouts.deploy);
    assert_eq!(c.conductor.max_attempts, d.conductor.max_attempts);
    assert_eq!(
        c.conductor.power_sync_interval,
        d.conductor.power_sync_interval
    );
    assert_eq!(
        c.conductor.power_sync_concurrency,
        d.conductor.power_sync_concurrency
    );
    assert_eq!(c.boot.token_ttl, d.boot.token_ttl);
    assert_eq!(c.tftp.listen, d.tftp.listen);
    assert_eq!(c.tftp.enabled, d.tftp.enabled);
    assert_eq!(c.discovery.enabled, d.discovery.enabled);
    assert_eq!(c.discovery.token_ttl, d.discovery.token_ttl);
}

#[test]
fn bad_values_name_the_key() {
    let e = parse("[http]\nlisten = \"nonsense\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("http.listen") && e.contains("nonsense"), "{e}");
    let e = parse("[http]\nidle_timeout = \"10ms\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("http.idle_timeout") && e.contains("100ms"),
        "{e}"
    );
    let e = parse("[http]\nmax_connections = 3\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("http.max_connections"), "{e}");
    let c = parse("[http]\nheader_read_timeout = \"5s\"\nmax_connections = 100\n").unwrap();
    assert_eq!(c.http.header_read_timeout, Duration::from_secs(5));
    assert_eq!(c.http.max_connections, 100);
    assert_eq!(c.http.idle_timeout, Duration::from_secs(60));
    let e = parse("[conductor.timeouts]\ninspect = \"10 parsecs\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("inspect") && e.contains("parsecs"), "{e}");
    assert!(e.contains("line 2"), "{e}");
    let e = parse("[database]\nurl = \"mysql://x\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("database.url"), "{e}");
    let e = parse("[conductor]\nworkers = 0\n").unwrap_err().to_string();
    assert!(e.contains("conductor.workers"), "{e}");
    let e = parse("[tftp]\nlisten = \"69\"\n").unwrap_err().to_string();
    assert!(e.contains("tftp.listen"), "{e}");
    let e = parse("[tftp]\nroot = \"\"\n").unwrap_err().to_string();
    assert!(e.contains("tftp.root"), "{e}");
    let e = parse("[tftp]\nenabled = true\nroot = \"/nonexistent/racklift-tftp\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tftp.root") && e.contains("not a directory"),
        "{e}"
    );
    let c = parse("[tftp]\nenabled = true\nlisten = \"127.0.0.1:6969\"\nroot = \"/\"\n").unwrap();
    assert!(c.tftp.enabled);
    assert_eq!(c.tftp.listen.port(), 6969);
    assert_eq!(c.tftp.root, PathBuf::from("/"));
}

#[test]
fn unknown_keys_and_bad_syntax_are_refused_with_a_line() {
    let e = parse("[http]\nlisten_on = \"1.2.3.4:5\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("listen_on"), "{e}");
    let e = parse("[http\nlisten = 1").unwrap_err().to_string();
    assert!(e.contains("test.toml") && e.contains("line 1"), "{e}");
    let e = parse("[http]\nlisten = 5\n").unwrap_err().to_string();
    assert!(e.contains("listen") && e.contains("line 2"), "{e}");
}

#[test]
fn environment_overrides_the_file() {
    let env = vec![
        (
            "RACKLIFT__HTTP__LISTEN".to_string(),
            "0.0.0.0:9000".to_string(),
        ),
        ("RACKLIFT__CONDUCTOR__WORKERS".to_string(), "3".to_string()),
        ("RACKLIFT__TFTP__ENABLED".to_string(), "true".to_string()),
        (
            "RACKLIFT__DHCP__INTERFACES".to_string(),
            "rl0, rl1".to_string(),
        ),
        ("UNRELATED".to_string(), "x".to_string()),
    ];
    let c = Config::from_toml_str("[http]\nlisten = \"127.0.0.1:1\"\n", "f", env).unwrap();
    assert_eq!(c.http.listen.to_string(), "0.0.0.0:9000");
    assert_eq!(c.conductor.workers, 3);
    assert!(c.tftp.enabled);
    assert_eq!(c.dhcp.interfaces, ["rl0", "rl1"]);
    let e = Config::from_toml_str(
        "",
        "f",
        vec![("RACKLIFT__HTTP__NOPE".to_string(), "1".to_string())],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn dhcp_subnets() {
    let c = parse(
        "[dhcp]\nenabled = true\ninterfaces = [\"rl-s\"]\nlease_time = \"1h\"\n\
         [[dhcp.subnet]]\nnetwork = \"10.77.0.0/16\"\nranges = [\"10.77.1.10-10.77.1.20\", \"10.77.2.5\"]\n\
         router = \"10.77.0.1\"\ndns_servers = [\"10.77.0.1\"]\ndomain = \"lab.example\"\ndiscovery = true\n\
         [[dhcp.subnet]]\nnetwork = \"192.168.5.0/24\"\nlease_time = \"5m\"\n",
    )
    .unwrap();
    assert_eq!(c.dhcp.mode, DhcpMode::Server);
    assert_eq!(c.dhcp.subnets.len(), 2);
    let s = &c.dhcp.subnets[0];
    assert_eq!(s.ranges.len(), 2);
    assert_eq!(
        s.ranges[1],
        ("10.77.2.5".parse().unwrap(), "10.77.2.5".parse().unwrap())
    );
    assert_eq!(s.lease_time, Duration::from_secs(3600));
    assert_eq!(c.dhcp.subnets[1].lease_time, Duration::from_secs(300));
    assert!(c.discovery_enabled_for(Some("10.77.3.3".parse().unwrap())));
    assert!(!c.discovery_enabled_for(Some("192.168.5.3".parse().unwrap())));
    assert!(!c.discovery_enabled_for(None));
    for (text, key, what) in [
        (
            "[dhcp]\nenabled = true\n[[dhcp.subnet]]\nnetwork = \"10.0.0.0/24\"\n",
            "dhcp.interfaces",
            "name the interfaces",
        ),
        (
            "[dhcp]\nenabled = true\ninterfaces = [\"x\"]\n",
            "dhcp.subnet",
            "at least one",
        ),
        (
            "[[dhcp.subnet]]\nnetwork = \"10.0.0.1/24\"\n",
            "dhcp.subnet[0].network",
            "host bits",
        ),
        (
            "[[dhcp.subnet]]\nnetwork = \"10.0.0.0/33\"\n",
            "dhcp.subnet[0].network",
            "not an IPv4 CIDR",
        ),
        (
            "[[dhcp.subnet]]\nnetwork = \"10.0.0.0/24\"\nranges = [\"10.0.1.1-10.0.1.5\"]\n",
            "dhcp.subnet[0].ranges",
            "not inside",
        ),
        (
            "[[dhcp.subnet]]\nnetwork = \"10.0.0.0/24\"\nranges = [\"10.0.0.9-10.0.0.5\"]\n",
            "dhcp.subnet[0].ranges",
            "past the last",
        ),
        (
            "[[dhcp.subnet]]\nnetwork = \"10.0.0.0/24\"\nrouter = \"x\"\n",
            "dhcp.subnet[0].router",
            "not an IPv4",
        ),
        (
            "[[dhcp.subnet]]\nnetwork = \"10.0.0.0/24\"\n[[dhcp.subnet]]\nnetwork = \"10.0.0.0/16\"\n",
            "dhcp.subnet[1].network",
            "overlaps",
        ),
        ("[dhcp]\nmode = \"relay\"\n", "dhcp.mode", "'relay'"),
    ] {
        let e = parse(text).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains(what), "{text}: {e}");
    }
    let p = parse("[dhcp]\nenabled = true\nmode = \"proxy\"\ninterfaces = \"rl-s\"\n").unwrap();
    assert_eq!(p.dhcp.mode, DhcpMode::Proxy);
    assert_eq!(p.dhcp.interfaces, ["rl-s"]);
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
    assert!(parse_duration("5 weeks").is_err());
    assert!(parse_duration("m").is_err());
}

#[test]
fn router_advertisements_follow_the_mode_unless_set() {
    assert!(parse("").unwrap().dhcp.router_advertisements);
    let proxy = "[dhcp]\nmode = \"proxy\"\n";
    assert!(!parse(proxy).unwrap().dhcp.router_advertisements);
    let on = format!("{proxy}router_advertisements = true\n");
    assert!(parse(&on).unwrap().dhcp.router_advertisements);
    let off = "[dhcp]\nrouter_advertisements = false\n";
    assert!(!parse(off).unwrap().dhcp.router_advertisements);
    let bad = parse("[dhcp]\nrouter_advertisements = \"yes\"\n").unwrap_err();
    assert!(bad.to_string().contains("router_advertisements"), "{bad}");
}
