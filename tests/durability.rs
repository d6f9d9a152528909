//! Storage faults: a write that was acknowledged survives them, a write that
//! could not be made is refused (503 `storage_unavailable`), `/healthz` says
//! what is wrong while it lasts, and the server recovers by itself once the
//! storage is back. SQLite: the data files made immutable (`chattr +i`, root
//! on a filesystem with the attribute) and writable again. PostgreSQL: every
//! connection of the server killed while writes run, and a cluster of the
//! test's own stopped and started under the server.

mod common;

use common::{Backend, TestServer};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn node(name: &str, i: u32) -> Value {
    json!({
        "name": name,
        "boot_mac": format!("52:54:00:d0:{:02x}:{:02x}", i / 256, i % 256),
        "bmc": {"driver": "fake", "address": format!("10.9.{}.{}", i / 256, i % 256),
                "username": "admin", "password": "pw"}
    })
}

/// `chattr` on `paths` (those that exist).
fn chattr(flag: &str, paths: &[PathBuf]) -> Result<(), String> {
    let existing: Vec<&PathBuf> = paths.iter().filter(|p| p.exists()).collect();
    let out = Command::new("chattr")
        .arg(flag)
        .args(&existing)
        .output()
        .map_err(|e| format!("chattr: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "chattr {flag}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The data files made immutable while it lives (given back on drop, also
/// when the test fails, so the temporary directory can be removed).
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(dir: &Path) -> Result<Immutable, String> {
        let paths = vec![
            dir.to_path_buf(),
            dir.join("racklift.db"),
            dir.join("racklift.db-wal"),
        ];
        // Not the -shm file: SQLite maps it into memory, and a write to a
        // mapped page of an immutable file is a SIGBUS, not an error.
        chattr("+i", &paths)?;
        Ok(Immutable(paths))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = chattr("-i", &self.0);
    }
}

/// Whether `chattr +i` works on a file in `dir` (root, a filesystem with the
/// attribute); the reason when not.
fn immutable_supported(dir: &Path) -> Option<String> {
    if !common::peers::on_path("chattr") {
        return Some("chattr not installed (e2fsprogs)".into());
    }
    let probe = dir.join("probe");
    std::fs::write(&probe, b"x").ok()?;
    let r = chattr("+i", std::slice::from_ref(&probe));
    let _ = chattr("-i", std::slice::from_ref(&probe));
    let _ = std::fs::remove_file(&probe);
    r.err()
        .map(|e| format!("cannot make files immutable in {}: {e}", dir.display()))
}

async fn healthz(s: &TestServer) -> (u16, Value) {
    s.req_as("", reqwest::Method::GET, "/healthz", None).await
}

/// Posts until an answer other than 503 comes (the store reconnecting), at
/// most for `within`; returns the last answer.
async fn post_until_served(s: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (st, v) = s.post(path, body.clone()).await;
        if st != 503 || Instant::now() > until {
            return (st, v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_error_loses_no_acknowledged_write() {
    let Some(mut s) = TestServer::start(Backend::Sqlite, |_| {}).await else {
        return;
    };
    let dir = s.dir.path().to_path_buf();
    if !common::peers::check(immutable_supported(&dir)) {
        return;
    }
    s.create(node("before", 1)).await;
    assert_eq!(healthz(&s).await.0, 200);

    // The files cannot be written: writes fail, and say why.
    let guard = Immutable::set(&dir).expect("chattr +i");
    let (st, v) = s.post("/v1/nodes", node("during", 2)).await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["error"]["code"], "storage_unavailable", "{v}");
    let (st, h) = healthz(&s).await;
    assert_eq!(st, 503, "healthz while the disk fails: {h}");
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(h["storage"].as_str().is_some_and(|m| !m.is_empty()), "{h}");
    let (st, _) = s.get("/v1/nodes/before").await;
    assert_eq!(st, 200, "reads go on");
    drop(guard);

    // Writable again: every acknowledged write is there, now and after a restart.
    let (st, v) = post_until_served(&s, "/v1/nodes", node("after", 3)).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = s.get("/v1/nodes/after").await;
    assert_eq!(st, 200, "an acknowledged node is found: {v}");
    let (st, v) = s.get("/v1/nodes/during").await;
    assert_eq!(st, 404, "the refused node was not made: {v}");
    let (st, v) = s.act("before", "manage").await;
    assert_eq!(st, 202, "{v}");
    s.wait_state("before", "manageable").await;
    let (st, h) = healthz(&s).await;
    assert_eq!((st, &h["status"]), (200, &json!("ok")), "{h}");

    // Another SQLite client can write: no transaction was left open.
    let raw = s.raw_db().await;
    sqlx::query("UPDATE nodes SET role = 'touched' WHERE name = 'after'")
        .execute(&raw)
        .await
        .expect("another client writes");
    raw.close().await;

    s.halt().await;
    s.boot().await;
    for name in ["before", "after"] {
        let (st, v) = s.get(&format!("/v1/nodes/{name}")).await;
        assert_eq!(st, 200, "{name} after a restart: {v}");
    }
    assert_eq!(s.node("before").await["state"], "manageable");
    s.finish().await;
}

/// The backend pids of every connection to `db` but the caller's.
async fn terminate_backends(admin: &sqlx::PgPool, db: &str) -> u64 {
    let rows: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(db)
    .fetch_all(admin)
    .await
    .expect("terminate");
    rows.len() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_connections_lose_no_acknowledged_write() {
    let Some(s) = TestServer::start(Backend::Postgres, |_| {}).await else {
        return;
    };
    let db = s.cfg.database.url.rsplit('/').next().unwrap().to_string();
    let admin = sqlx::PgPool::connect(&common::pg_admin_url())
        .await
        .expect("admin connection");
    s.create(node("first", 0)).await;

    // Writes run while a killer ends every server connection, many times.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let (admin, db, stop) = (admin.clone(), db.clone(), stop.clone());
        tokio::spawn(async move {
            let mut killed = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                killed += terminate_backends(&admin, &db).await;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            killed
        })
    };
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 1..=150u32 {
        let name = format!("n{i}");
        let (st, v) = s.post("/v1/nodes", node(&name, i)).await;
        match st {
            201 => acked.push(name),
            503 => {
                assert_eq!(v["error"]["code"], "storage_unavailable", "{v}");
                refused += 1;
            }
            _ => panic!("a write under killed connections answered {st}: {v}"),
        }
        if i % 10 == 0 {
            let (st, v) = s.act(&acked[acked.len() / 2], "manage").await;
            assert!(st == 202 || st == 409 || st == 503, "{st} {v}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let killed = killer.await.unwrap();
    println!(
        "{killed} connections killed; {} writes acknowledged, {refused} refused",
        acked.len()
    );
    assert!(killed > 10, "the killer ran");

    // Every acknowledged write is there; the server serves writes again.
    for name in &acked {
        let (st, v) = s.get(&format!("/v1/nodes/{name}")).await;
        assert_eq!(st, 200, "acknowledged {name}: {v}");
    }
    let (st, v) = post_until_served(&s, "/v1/nodes", node("last", 999)).await;
    assert_eq!(st, 201, "{v}");
    let (st, h) = healthz(&s).await;
    assert_eq!((st, &h["status"]), (200, &json!("ok")), "{h}");
    admin.close().await;
    s.finish().await;
}

/// A PostgreSQL cluster of the test's own (initdb as the `postgres` user),
/// stopped when dropped.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Result<Cluster, String> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .map_err(|e| format!("no PostgreSQL server binaries in /usr/lib/postgresql: {e}"))?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|b| b.join("initdb").exists())
            .ok_or("no initdb under /usr/lib/postgresql/*/bin")?;
        if !Command::new("id")
            .arg("postgres")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Err("no postgres user to run initdb as".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let data = dir.path().join("pgdata");
        let _ = Command::new("chown")
            .args(["postgres", &dir.path().display().to_string()])
            .status();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let c = Cluster {
            bin,
            data,
            port,
            _dir: dir,
        };
        c.run(
            "initdb",
            &[
                "-A",
                "trust",
                "-U",
                "postgres",
                "-D",
                &c.data.display().to_string(),
            ],
        )?;
        c.start()?;
        Ok(c)
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let out = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join(tool))
            .args(args)
            .output()
            .map_err(|e| format!("{tool}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn start(&self) -> Result<(), String> {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data.display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data.display().to_string(),
                "-o",
                &opts,
                "-w",
                "-l",
                &self.data.join("log").display().to_string(),
                "start",
            ],
        )
    }

    fn stop(&self) -> Result<(), String> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data.display().to_string(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        )
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_the_server_loses_no_acknowledged_write() {
    if !common::peers::check(
        (unsafe { libc::geteuid() } != 0).then(|| "a private PostgreSQL cluster needs root".into()),
    ) {
        return;
    }
    let cluster = match Cluster::new() {
        Ok(c) => c,
        Err(e) => {
            common::peers::check(Some(format!("cannot run a PostgreSQL cluster: {e}")));
            return;
        }
    };
    // The server's own log, shown when the test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("racklift=debug")
        .with_test_writer()
        .try_init();
    let url = cluster.url();
    let Some(mut s) = TestServer::start(Backend::Sqlite, |c| c.database.url = url).await else {
        return;
    };
    s.backend = Backend::Postgres;
    s.create(node("kept", 1)).await;

    cluster.stop().expect("stop the cluster");
    let (st, v) = s.post("/v1/nodes", node("while-down", 2)).await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["error"]["code"], "storage_unavailable", "{v}");
    let (st, h) = healthz(&s).await;
    assert_eq!((st, &h["status"]), (503, &json!("degraded")), "{h}");

    cluster.start().expect("start the cluster");
    let (st, v) = post_until_served(&s, "/v1/nodes", node("after", 3)).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = s.act("kept", "manage").await;
    assert_eq!(st, 202, "{v}");
    // After a restart of the database, a worker may first wait out a
    // connection attempt begun while it was down (10 s), then the writes of
    // its step's progress retry (6 s) before the lease hands the step on.
    s.wait_state_within("kept", "manageable", Duration::from_secs(60))
        .await;
    let (st, h) = healthz(&s).await;
    assert_eq!((st, &h["status"]), (200, &json!("ok")), "{h}");

    s.halt().await;
    s.boot().await;
    for name in ["kept", "after"] {
        let (st, v) = s.get(&format!("/v1/nodes/{name}")).await;
        assert_eq!(st, 200, "{name} after a restart: {v}");
    }
    let (st, _) = s.get("/v1/nodes/while-down").await;
    assert_eq!(st, 404);
    s.halt().await;
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_files_are_private_to_the_server() {
    use std::os::unix::fs::PermissionsExt;
    // Everything in a directory the server makes itself.
    let Some(mut s) = TestServer::start(Backend::Sqlite, |c| {
        let data = c.data_dir.join("data");
        c.database.url = format!("sqlite://{}/racklift.db", data.display());
        c.secrets.key_file = data.join("secret.key");
        c.secrets.admin_token_file = data.join("admin.token");
        c.data_dir = data;
    })
    .await
    else {
        return;
    };
    s.create(node("one", 1)).await;
    let dir = s.cfg.data_dir.clone();
    let files = [
        "racklift.db",
        "racklift.db-wal",
        "racklift.db-shm",
        "secret.key",
        "admin.token",
    ];
    assert_eq!(mode(&dir), 0o700, "the data directory");
    for f in files {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }

    // A data directory and database opened to others before are closed again.
    s.halt().await;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        dir.join("racklift.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    s.boot().await;
    assert_eq!(mode(&dir), 0o700, "the data directory after a restart");
    assert_eq!(mode(&dir.join("racklift.db")), 0o600);
    assert_eq!(s.node("one").await["name"], "one");
    s.finish().await;
}
