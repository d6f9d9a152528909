//! Start-up and shutdown: opens the data directory and the store, makes the first
//! admin token, starts the conductor, the event pump, the HTTP server and, when
//! enabled, the TFTP server.
//!
//! The caller binds the HTTP listener and passes it in, so tests bind port 0.
//! The TFTP socket is bound here from `tftp.listen` (tests of the TFTP server
//! itself call `tftp::serve` with a socket of their own).

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
    /// Stops accepting requests, lets workers finish their stage, and closes the store.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.store.close().await;
    }
}

/// Opens everything and starts serving on `listener`.
pub async fn start(cfg: Config, listener: TcpListener) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&cfg.data_dir)
        .with_context(|| format!("cannot create data directory {}", cfg.data_dir.display()))?;
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
    let profiles = crate::api::profiles::load(&cfg.profiles_dir)
        .map_err(|e| anyhow::anyhow!("profiles: {e}"))?;
    store.sync_pools(&profiles).await?;
    tracing::info!(count = profiles.len(), dir = %cfg.profiles_dir.display(), "profiles loaded");
    let addr = listener.local_addr()?;
    let (shutdown, rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::default());
    let drivers = Drivers::default();
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
    {
        let conductor = Conductor::new(
            store.clone(),
            drivers.clone(),
            cfg.conductor.clone(),
            metrics.clone(),
        );
        let sd = rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = conductor.run(sd).await {
                tracing::error!(error = %e, "conductor stopped");
            }
        }));
    }
    if cfg.tftp.enabled {
        let root = cfg.tftp.root.clone();
        if !root.exists() {
            std::fs::create_dir_all(&root)
                .with_context(|| format!("cannot create TFTP root {}", root.display()))?;
        }
        let socket = std::net::UdpSocket::bind(cfg.tftp.listen)
            .with_context(|| format!("cannot bind TFTP on {}", cfg.tftp.listen))?;
        let metrics = metrics.clone();
        let sd = rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = crate::tftp::serve(socket, &root, metrics, sd).await {
                tracing::error!(error = %e, "TFTP server stopped");
            }
        }));
    }
    let app = AppState::new(
        store.clone(),
        Arc::new(cfg),
        metrics,
        drivers.clone(),
        head_rx,
        profiles,
    );
    let mut sd = rx.clone();
    tasks.push(tokio::spawn(async move {
        let serve = axum::serve(
            listener,
            router(app).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = sd.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    }));
    tracing::info!(%addr, backend = ?store.backend(), "racklift serving");
    Ok(Running {
        addr,
        store,
        drivers,
        shutdown,
        tasks,
    })
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
