//! The TFTP server: read-only boot files from one root directory.
//!
//! racklift's own engine (RFC 1350, with the options of RFC 2347, 2348, 2349
//! and RFC 7440): a request loop on one thread (`listen`), each accepted
//! read on its own OS thread with its own connected UDP socket
//! (`transfer`), and the wire format in [`packet`]. A transfer costs one
//! `send` per block and one `recv` per window, with no allocation per block;
//! that per-block cost is what a lock-step (windowsize 1) transfer is made of.
//!
//! This module decides what a name means: it asks the [`Generator`] first
//! (files made per request, such as an iPXE script per MAC, from a narrow
//! lookup and never from SQL), then looks for a regular file under the root.
//!
//! Refused with a TFTP error and counted in `tftp_refused`: absolute names,
//! names with a `..` segment, names that resolve (through symbolic links)
//! outside the root, mail mode, and every write request. A missing file is
//! answered "file not found" and counted in `tftp_not_found`. Each accepted
//! read is counted in `tftp_transfers` and logged when it ends, with the peer,
//! the file and the bytes the client acknowledged. Packets that are not TFTP
//! (and requests with an option value out of range, which is ignored) are
//! counted in `tftp_malformed`; requests past [`MAX_TRANSFERS`] at
//! once are answered "server busy" and counted in `tftp_busy`.
//!
//! The caller binds the UDP socket ([`serve`] takes it bound), so tests use a
//! free port; the server stops when the shutdown channel turns `true`.

mod listen;
pub mod packet;
mod transfer;

pub use listen::MAX_TRANSFERS;

use crate::confined::{OpenError, open_under};
use crate::metrics::Metrics;
use std::fs::File;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The largest window a client may ask for (RFC 7440); larger requests get this.
/// It bounds the memory one transfer holds to `2 * MAX_WINDOW * blksize` (the
/// window in flight and the next one).
pub const MAX_WINDOW: u16 = 64;

/// The retransmission timeout used when a client does not ask for one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// How many times in a row an unacknowledged window (or OACK) is sent again
/// before the transfer is dropped.
pub const MAX_RETRIES: u32 = 5;

/// Files made per request instead of read from the root (e.g. an iPXE script
/// per MAC). Implementations look things up through a narrow interface; the
/// TFTP server never touches the store.
#[async_trait::async_trait]
pub trait Generator: Send + Sync + 'static {
    /// The content for `name` asked by `peer`, or `None` to look in the root.
    /// `name` has already passed the path checks (relative, no `..`).
    async fn generate(&self, peer: SocketAddr, name: &str) -> Option<Vec<u8>>;
}

/// No generated files: everything comes from the root.
pub struct NoGenerated;

#[async_trait::async_trait]
impl Generator for NoGenerated {
    async fn generate(&self, _peer: SocketAddr, _name: &str) -> Option<Vec<u8>> {
        None
    }
}

/// Why a request name is refused before any file is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    Empty,
    Absolute,
    ParentSegment,
}

/// Checks a requested name: relative, not empty, no `..` segment (either
/// slash counts as a separator, as some firmware sends `\`). Returns the name
/// without a leading `./`.
pub fn check_name(name: &str) -> Result<&str, NameError> {
    let name = name.strip_prefix("./").unwrap_or(name);
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.starts_with('/') || name.starts_with('\\') || has_drive_prefix(name) {
        return Err(NameError::Absolute);
    }
    if name.split(['/', '\\']).any(|seg| seg == "..") {
        return Err(NameError::ParentSegment);
    }
    Ok(name)
}

fn has_drive_prefix(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

/// A transfer that ended, for whoever records it (node events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferEnded {
    pub peer: SocketAddr,
    pub file: String,
    pub bytes: u64,
    /// Whether the whole file was read.
    pub complete: bool,
    pub millis: u64,
}

/// The request handler: generated files first, then regular files under `root`.
pub struct BootFiles {
    root: PathBuf,
    generator: Arc<dyn Generator>,
    metrics: Arc<Metrics>,
    reports: Option<tokio::sync::mpsc::UnboundedSender<TransferEnded>>,
}

impl BootFiles {
    /// Serves `root` (which must be a directory) with no generated files.
    pub fn new(root: &Path, metrics: Arc<Metrics>) -> io::Result<BootFiles> {
        let root = std::fs::canonicalize(root)?;
        if !root.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(BootFiles {
            root,
            generator: Arc::new(NoGenerated),
            metrics,
            reports: None,
        })
    }

    /// Sends a [`TransferEnded`] to `tx` when each transfer ends.
    pub fn with_reports(
        mut self,
        tx: tokio::sync::mpsc::UnboundedSender<TransferEnded>,
    ) -> BootFiles {
        self.reports = Some(tx);
        self
    }

    /// Adds a generator, asked before the root for every name.
    pub fn with_generator(mut self, generator: Arc<dyn Generator>) -> BootFiles {
        self.generator = generator;
        self
    }

    /// The canonical root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn refuse(&self, peer: &SocketAddr, name: &str, reason: &str) {
        self.metrics.count("tftp_refused");
        tracing::warn!(%peer, file = %name, reason, "tftp request refused");
    }
}

/// What a read request is answered with.
#[derive(Debug)]
pub struct Opened {
    /// The name as checked (without a leading `./`).
    pub name: String,
    pub content: Content,
}

/// A generated file's bytes, or a regular file under the root.
#[derive(Debug)]
pub enum Content {
    Generated(Vec<u8>),
    File { file: File, len: u64 },
}

impl Content {
    /// The size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Content::Generated(b) => b.len() as u64,
            Content::File { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A read request answered with a TFTP error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub code: u16,
    pub message: &'static str,
}

impl BootFiles {
    /// Decides a read request for `name` from `peer`: the generator first
    /// (run to completion on `rt`), then a regular file under the root. Counts
    /// and logs refusals. Blocks (file system calls): call it from a thread
    /// that may block, not from inside the runtime.
    pub fn open_read(
        &self,
        peer: SocketAddr,
        requested: &str,
        rt: &tokio::runtime::Handle,
    ) -> Result<Opened, Refused> {
        let denied = Refused {
            code: packet::ERR_ACCESS,
            message: "access violation",
        };
        let name = match check_name(requested) {
            Ok(n) => n.to_string(),
            Err(NameError::Empty) => {
                self.refuse(&peer, requested, "empty name");
                return Err(denied);
            }
            Err(NameError::Absolute) => {
                self.refuse(&peer, requested, "absolute path");
                return Err(denied);
            }
            Err(NameError::ParentSegment) => {
                self.refuse(&peer, requested, "'..' in path");
                return Err(denied);
            }
        };
        if let Some(bytes) = rt.block_on(self.generator.generate(peer, &name)) {
            return Ok(Opened {
                name,
                content: Content::Generated(bytes),
            });
        }
        match open_under(&self.root, &self.root.join(&name)) {
            Ok((file, meta)) => Ok(Opened {
                name,
                content: Content::File {
                    file,
                    len: meta.len(),
                },
            }),
            Err(OpenError::NotFound) => {
                self.metrics.count("tftp_not_found");
                tracing::info!(%peer, file = %name, "tftp file not found");
                Err(Refused {
                    code: packet::ERR_NOT_FOUND,
                    message: "file not found",
                })
            }
            Err(OpenError::Outside(_)) => {
                self.refuse(&peer, &name, "resolves outside the root");
                Err(denied)
            }
            Err(OpenError::Io(e)) => {
                tracing::warn!(%peer, file = %name, error = %e, "tftp cannot open file");
                Err(Refused {
                    code: packet::ERR_UNDEFINED,
                    message: "cannot read file",
                })
            }
        }
    }
}

/// Serves `root` on `socket` until `shutdown` turns `true`.
pub async fn serve(
    socket: UdpSocket,
    root: &Path,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    serve_with(socket, open_root(root, metrics)?, shutdown).await
}

/// The handler for `root`, with a clear error when it cannot serve.
pub fn open_root(root: &Path, metrics: Arc<Metrics>) -> anyhow::Result<BootFiles> {
    BootFiles::new(root, metrics)
        .map_err(|e| anyhow::anyhow!("TFTP root {} is not usable: {e}", root.display()))
}

/// Serves with a prepared handler (e.g. one with a [`Generator`]). The
/// request loop and the transfers run on threads of their own; the generator
/// runs on the runtime this is called from.
pub async fn serve_with(
    socket: UdpSocket,
    files: BootFiles,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let addr = socket.local_addr()?;
    let root = files.root().to_path_buf();
    let rt = tokio::runtime::Handle::current();
    let (listener, stopper) = listen::Listener::new(socket, files, rt)?;
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("racklift-tftp".into())
        .spawn(move || {
            let _ = done_tx.send(listener.run());
        })?;
    tracing::info!(%addr, root = %root.display(), "tftp serving");
    let stopped = async {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    let ended = tokio::select! {
        r = &mut done_rx => Some(r),
        () = stopped => None,
    };
    let ended = match ended {
        Some(r) => r,
        None => {
            stopper.stop();
            done_rx.await
        }
    };
    match ended {
        Ok(Ok(())) => {
            tracing::info!(%addr, "tftp stopped");
            Ok(())
        }
        Ok(Err(e)) => Err(anyhow::anyhow!("TFTP server on {addr} stopped: {e}")),
        Err(_) => Err(anyhow::anyhow!(
            "TFTP server thread on {addr} ended without a word"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name("ipxe.efi"), Ok("ipxe.efi"));
        assert_eq!(check_name("./ipxe.efi"), Ok("ipxe.efi"));
        assert_eq!(check_name("efi/x86/ipxe.efi"), Ok("efi/x86/ipxe.efi"));
        assert_eq!(check_name("..hidden"), Ok("..hidden"));
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(check_name("/etc/passwd"), Err(NameError::Absolute));
        assert_eq!(check_name("\\etc\\passwd"), Err(NameError::Absolute));
        assert_eq!(check_name("C:\\boot.ini"), Err(NameError::Absolute));
        assert_eq!(check_name("../etc/passwd"), Err(NameError::ParentSegment));
        assert_eq!(check_name("a/../../x"), Err(NameError::ParentSegment));
        assert_eq!(check_name("a\\..\\x"), Err(NameError::ParentSegment));
        assert_eq!(check_name("a/.."), Err(NameError::ParentSegment));
    }

    #[test]
    fn files_outside_the_root_are_not_opened() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("inside"), b"ok").unwrap();
        std::fs::write(dir.path().join("secret"), b"no").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        let root = std::fs::canonicalize(&root).unwrap();
        let open = |name: &str| open_under(&root, &root.join(name));
        assert!(matches!(open("inside"), Ok((_, m)) if m.len() == 2));
        assert!(matches!(open("link"), Err(OpenError::Outside(_))));
        assert!(matches!(open("sub"), Err(OpenError::NotFound)));
        assert!(matches!(open("nope"), Err(OpenError::NotFound)));
    }
}
