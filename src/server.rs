//! Start-up and shutdown: opens the data directory and the store, makes the first
//! admin token, starts the conductor, the power-state sync, the event pump, the
//! HTTP server and, when enabled, the DHCP and TFTP servers.
//!
//! Sockets are bound first ([`Listeners::bind`], plain `std` sockets, so a
//! caller may bind them inside another network namespace) and then served by
//! [`start_with`]; [`start`] binds the TFTP and DHCP sockets from the
//! configuration around an HTTP listener the caller bound (tests bind port 0).

use crate::api::{AppState, router};
use crate::bmc::Drivers;
use crate::conductor::Conductor;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::secrets::SecretBox;
use crate::store::Store;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub store: Store,
    pub drivers: Drivers,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting requests and interrupts running steps (they run again
    /// from their stage at the next start), waits at most [`SHUTDOWN_GRACE`]
    /// for the rest, and closes the store.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let aborts: Vec<_> = self.tasks.iter().map(|t| t.abort_handle()).collect();
        let all = futures::future::join_all(self.tasks);
        if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
            // Connections still open (event streams, slow clients) and any
            // work still running are cut: what was acknowledged is committed.
            tracing::info!(
                grace_s = SHUTDOWN_GRACE.as_secs(),
                "shut-down grace over; stopping what still runs"
            );
            for a in aborts {
                a.abort();
            }
        }
        self.store.close().await;
    }
}

/// How long a shut-down waits for open connections and running work.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The sockets a server serves on.
#[derive(Debug)]
pub struct Listeners {
    pub http: std::net::TcpListener,
    pub tftp: Option<std::net::UdpSocket>,
    pub dhcp: Vec<crate::netboot::dhcp::DhcpSocket>,
    /// Router-advertisement sockets, one per DHCP interface when enabled.
    pub ra: Vec<crate::netboot::ra::RaSocket>,
}

impl Listeners {
    /// Binds the TFTP, DHCP and router-advertisement sockets the
    /// configuration enables; `http` is the HTTP listener.
    pub fn bind_with(cfg: &Config, http: std::net::TcpListener) -> anyhow::Result<Listeners> {
        let tftp = if cfg.tftp.enabled {
            let s = std::net::UdpSocket::bind(cfg.tftp.listen)
                .with_context(|| format!("cannot bind TFTP on {}", cfg.tftp.listen))?;
            s.set_nonblocking(true)?;
            Some(s)
        } else {
            None
        };
        let (dhcp, ra) = if cfg.dhcp.enabled {
            (
                crate::netboot::dhcp::net::bind(&cfg.dhcp).context("cannot start DHCP")?,
                crate::netboot::ra::bind(&cfg.dhcp),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        Ok(Listeners {
            http,
            tftp,
            dhcp,
            ra,
        })
    }

    /// Binds every socket the configuration asks for, HTTP included.
    pub fn bind(cfg: &Config) -> anyhow::Result<Listeners> {
        let http = std::net::TcpListener::bind(cfg.http.listen)
            .with_context(|| format!("cannot listen on {}", cfg.http.listen))?;
        http.set_nonblocking(true)?;
        Listeners::bind_with(cfg, http)
    }
}

/// Opens everything and starts serving on `listener`, binding the TFTP and
/// DHCP sockets the configuration enables.
pub async fn start(cfg: Config, listener: TcpListener) -> anyhow::Result<Running> {
    let sockets = Listeners::bind_with(&cfg, listener.into_std()?)?;
    start_with(cfg, sockets).await
}

/// Opens everything and starts serving on sockets already bound.
pub async fn start_with(cfg: Config, sockets: Listeners) -> anyhow::Result<Running> {
    let listener = TcpListener::from_std(sockets.http)?;
    raise_open_file_limit(cfg.http.max_connections);
    crate::secrets::private_dir(&cfg.data_dir)
        .with_context(|| format!("cannot create data directory {}", cfg.data_dir.display()))?;
    crate::confined::check_mounts(
        &cfg.data_dir,
        &[
            ("boot.assets_dir", &cfg.boot.assets_dir),
            ("boot.ramdisk_dir", &cfg.boot.ramdisk_dir),
            ("tftp.root", &cfg.tftp.root),
        ],
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    warn_of_boot_links(&cfg);
    if let Some(m) = crate::netboot::script::ramdisk_missing(&cfg.boot, &cfg.http.public_url) {
        tracing::warn!(
            "{}: machines that should boot it are told so on their console and ask again every {} s",
            m.detail,
            crate::netboot::script::RETRY_SECS
        );
    }
    let secrets = SecretBox::load_or_create(&cfg.secrets.key_file)?;
    let store = Store::open(
        &cfg.database.url,
        cfg.database.max_connections,
        secrets,
        cfg.conductor.timeouts.clone(),
    )
    .await
    .with_context(|| format!("cannot open database {}", redact(&cfg.database.url)))?;
    if let Some(path) = store
        .ensure_admin_token(&cfg.secrets.admin_token_file)
        .await?
    {
        tracing::warn!(path = %path.display(), "first start: an admin API token was written to this file (mode 0600)");
    }
    let profiles = crate::app::profiles::load(&cfg.profiles_dir)
        .map_err(|e| anyhow::anyhow!("profiles: {e}"))?;
    store.sync_pools(&profiles).await?;
    tracing::info!(count = profiles.len(), dir = %cfg.profiles_dir.display(), "profiles loaded");
    let addr = listener.local_addr()?;
    let (shutdown, rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::default());
    let drivers = Drivers::default();
    let profiles: crate::profiles::SharedProfiles =
        Arc::new(std::sync::RwLock::new(Arc::new(profiles)));
    let mut tasks = Vec::new();

    let (head_tx, head_rx) = watch::channel(store.last_event_id().await?);
    {
        let store = store.clone();
        let mut sd = rx.clone();
        tasks.push(tokio::spawn(async move {
            // Wakes live streams on local commits at once, and on other processes' within 500 ms.
            loop {
                let local = store.events_written.notified();
                tokio::select! {
                    _ = sd.wait_for(|s| *s) => return,
                    _ = local => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                if let Ok(id) = store.last_event_id().await {
                    head_tx.send_if_modified(|h| {
                        let changed = *h != id;
                        *h = id;
                        changed
                    });
                }
            }
        }));
    }
    let cfg = Arc::new(cfg);
    let core = crate::app::App {
        store: store.clone(),
        cfg: cfg.clone(),
        metrics: metrics.clone(),
        drivers: drivers.clone(),
        profiles,
    };
    {
        let conductor = Conductor::new(core.clone());
        let sd = rx.clone();
        tasks.push(tokio::spawn(conductor.run(sd)));
    }
    if !cfg.conductor.power_sync_interval.is_zero() {
        let (store, drivers, sd) = (store.clone(), drivers.clone(), rx.clone());
        let (every, at_once) = (
            cfg.conductor.power_sync_interval,
            cfg.conductor.power_sync_concurrency,
        );
        tasks.push(tokio::spawn(async move {
            crate::power_sync::run(store, drivers, every, at_once, sd).await;
        }));
    }
    if let Some(socket) = sockets.tftp {
        let root = cfg.tftp.root.clone();
        if !root.exists() {
            std::fs::create_dir_all(&root)
                .with_context(|| format!("cannot create TFTP root {}", root.display()))?;
        }
        let (reports, mut ended) = tokio::sync::mpsc::unbounded_channel();
        let files = crate::netboot::tftp::open_root(&root, metrics.clone())?.with_reports(reports);
        let sd = rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::netboot::tftp::serve_with(socket, files, sd).await {
                tracing::error!(error = %e, "TFTP server stopped");
            }
        }));
        // Each transfer to a known node (found by its DHCP lease) is an event on it.
        let store = store.clone();
        tokio::spawn(async move {
            while let Some(t) = ended.recv().await {
                if let Err(e) = record_transfer(&store, &t).await {
                    tracing::debug!(error = %e, "TFTP transfer not recorded");
                }
            }
        });
    }
    if !sockets.dhcp.is_empty() {
        let server = Arc::new(crate::netboot::dhcp::DhcpServer::new(
            cfg.dhcp.clone(),
            &cfg.http.public_url,
            cfg.discovery.enabled,
            store.clone(),
            metrics.clone(),
        ));
        tasks.push(tokio::spawn(server.clone().keep_directory(rx.clone())));
        let sd = rx.clone();
        let dhcp = sockets.dhcp;
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::netboot::dhcp::server::serve(server, dhcp, sd).await {
                tracing::error!(error = %e, "DHCP server stopped");
            }
        }));
    }
    if !sockets.ra.is_empty() {
        let (ra, sd, m) = (sockets.ra, rx.clone(), metrics.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::netboot::ra::serve(ra, sd, m).await {
                tracing::error!(error = %e, "router advertisements stopped");
            }
        }));
    }
    let front_mounts = crate::netboot::http_front::mounts(&cfg);
    let front_metrics = metrics.clone();
    let app = AppState::new(core, head_rx);
    let limits = crate::netboot::http_front::Limits::from_config(&app.cfg.http);
    let front_shutdown = rx.clone();
    tasks.push(tokio::spawn(crate::netboot::http_front::serve(
        listener,
        front_mounts,
        front_metrics,
        limits,
        router(app),
        front_shutdown,
    )));
    tracing::info!(%addr, backend = ?store.backend(), "racklift serving");
    Ok(Running {
        addr,
        store,
        drivers,
        shutdown,
        tasks,
    })
}

/// Warns of each iPXE binary that DHCP hands out and that is, in the TFTP
/// root, a link to somewhere outside it: it will not be served (Debian's
/// `/usr/lib/ipxe/ipxe.efi` is a link to `/boot/ipxe.efi`).
fn warn_of_boot_links(cfg: &Config) {
    let f = crate::netboot::dhcp::pxe::BootFiles::default();
    let names = [
        f.bios.as_str(),
        f.uefi_x64.as_str(),
        f.uefi_x64_snponly.as_str(),
        f.uefi_ia32.as_str(),
        f.uefi_arm64.as_str(),
    ];
    for (name, target) in crate::confined::links_out(&cfg.tftp.root, &names) {
        tracing::warn!(
            file = %cfg.tftp.root.join(&name).display(),
            target = %target.display(),
            "a boot file is a link out of tftp.root and is not served (over TFTP or HTTP); \
             copy the files into a directory of their own (cp -L) and set tftp.root to it"
        );
    }
}

/// Raises the soft limit on open descriptors to the hard one (each HTTP
/// connection, TFTP transfer and database connection holds one), and warns
/// when even that is below what `http.max_connections` needs.
fn raise_open_file_limit(max_connections: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for the duration of both calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    // Room for the database, TFTP transfers (at most 512) and DHCP sockets.
    let needed = max_connections as u64 + 1024;
    if lim.rlim_cur < needed {
        tracing::warn!(
            open_files = lim.rlim_cur,
            needed,
            "the open-file limit is below http.max_connections + 1024: raise it (LimitNOFILE=) or lower http.max_connections"
        );
    }
}

/// Records a TFTP transfer on the node whose lease has the peer's address.
async fn record_transfer(
    store: &Store,
    t: &crate::netboot::tftp::TransferEnded,
) -> anyhow::Result<()> {
    let std::net::IpAddr::V4(ip) = t.peer.ip() else {
        return Ok(());
    };
    let Some(mac) = store.lease_at(ip).await?.and_then(|l| l.mac) else {
        return Ok(());
    };
    let Some(node) = store.node_by_mac(mac).await? else {
        return Ok(());
    };
    let text = format!(
        "TFTP {} {} ({} bytes in {} ms) to {}",
        t.file,
        if t.complete { "sent" } else { "cut short" },
        t.bytes,
        t.millis,
        t.peer
    );
    store.log_event(node.node.id, "tftp", "tftp", &text).await?;
    Ok(())
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &cred[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("postgres://u:pw@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(super::redact("sqlite://x.db"), "sqlite://x.db");
    }
}
