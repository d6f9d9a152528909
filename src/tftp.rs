//! The TFTP server: read-only boot files from one root directory.
//!
//! Built on `async-tftp`, which negotiates `blksize`, `tsize`, `timeout` and
//! `windowsize` (RFC 2347-2349, RFC 7440). This module decides what a name
//! means: it asks the [`Generator`] first (files made per request, such as an
//! iPXE script per MAC, from a narrow lookup and never from SQL), then looks
//! for a regular file under the root.
//!
//! Refused with a TFTP error and counted in `tftp_refused`: absolute names,
//! names with a `..` segment, names that resolve (through symbolic links)
//! outside the root, and every write request. A missing file is answered
//! "file not found" and counted in `tftp_not_found`. Each accepted read is
//! counted in `tftp_transfers` and logged when it ends, with the peer, the
//! file and the bytes read.
//!
//! The caller binds the UDP socket ([`serve`] takes it bound), so tests use a
//! free port; the server stops when the shutdown channel turns `true`.

use crate::metrics::Metrics;
use async_tftp::packet;
use async_tftp::server::{Handler, TftpServerBuilder};
use blocking::Unblock;
use futures::io::{AsyncRead, Cursor, Sink};
use std::fs::File;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The largest window a client may ask for (RFC 7440); larger requests get this.
/// It bounds the memory one transfer holds to `MAX_WINDOW * blksize`.
pub const MAX_WINDOW: u16 = 64;

/// The retransmission timeout used when a client does not ask for one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// How many times an unacknowledged window is sent again before the transfer
/// is dropped (the crate's default of 100 keeps a dead peer's transfer for minutes).
pub const MAX_RETRIES: u32 = 5;

/// How much of a file is read ahead of the transfer at once.
const READ_AHEAD: usize = 256 * 1024;

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

    fn refuse(&self, peer: &SocketAddr, name: &str, reason: &str) -> packet::Error {
        self.metrics.count("tftp_refused");
        tracing::warn!(%peer, file = %name, reason, "tftp request refused");
        packet::Error::PermissionDenied
    }
}

/// Opens `root/name` if it is a regular file that really lies under `root`.
fn open_under(root: &Path, name: &str) -> Result<(File, u64), OpenError> {
    let path = root.join(name);
    let real = match std::fs::canonicalize(&path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OpenError::NotFound),
        Err(e) => return Err(OpenError::Io(e)),
    };
    if !real.starts_with(root) {
        return Err(OpenError::Outside);
    }
    let file = File::open(&real).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => OpenError::NotFound,
        _ => OpenError::Io(e),
    })?;
    let meta = file.metadata().map_err(OpenError::Io)?;
    if !meta.is_file() {
        return Err(OpenError::NotFound);
    }
    Ok((file, meta.len()))
}

enum OpenError {
    NotFound,
    Outside,
    Io(io::Error),
}

impl Handler for BootFiles {
    type Reader = Transfer;
    type Writer = Sink;

    async fn read_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
    ) -> Result<(Transfer, Option<u64>), packet::Error> {
        let peer = *client;
        // The crate builds the path from the packet's UTF-8 name.
        let requested = path.to_string_lossy().into_owned();
        let name = match check_name(&requested) {
            Ok(n) => n.to_string(),
            Err(NameError::Empty) => return Err(self.refuse(&peer, &requested, "empty name")),
            Err(NameError::Absolute) => {
                return Err(self.refuse(&peer, &requested, "absolute path"));
            }
            Err(NameError::ParentSegment) => {
                return Err(self.refuse(&peer, &requested, "'..' in path"));
            }
        };
        if let Some(bytes) = self.generator.generate(peer, &name).await {
            let len = bytes.len() as u64;
            return Ok((
                self.start(peer, name, Source::Memory(Cursor::new(bytes))),
                Some(len),
            ));
        }
        let root = self.root.clone();
        let lookup = name.clone();
        match blocking::unblock(move || open_under(&root, &lookup)).await {
            Ok((file, len)) => Ok((
                self.start(
                    peer,
                    name,
                    Source::File(Unblock::with_capacity(READ_AHEAD, file)),
                ),
                Some(len),
            )),
            Err(OpenError::NotFound) => {
                self.metrics.count("tftp_not_found");
                tracing::info!(%peer, file = %name, "tftp file not found");
                Err(packet::Error::FileNotFound)
            }
            Err(OpenError::Outside) => Err(self.refuse(&peer, &name, "resolves outside the root")),
            Err(OpenError::Io(e)) => {
                tracing::warn!(%peer, file = %name, error = %e, "tftp cannot open file");
                Err(packet::Error::Msg("cannot read file".into()))
            }
        }
    }

    async fn write_req_open(
        &mut self,
        client: &SocketAddr,
        path: &Path,
        _size: Option<u64>,
    ) -> Result<Sink, packet::Error> {
        Err(self.refuse(client, &path.to_string_lossy(), "write request"))
    }
}

impl BootFiles {
    fn start(&self, peer: SocketAddr, file: String, source: Source) -> Transfer {
        self.metrics.count("tftp_transfers");
        tracing::debug!(%peer, %file, "tftp transfer started");
        Transfer {
            source,
            peer,
            file,
            bytes: 0,
            finished: false,
            started: Instant::now(),
            reports: self.reports.clone(),
        }
    }
}

enum Source {
    File(Unblock<File>),
    Memory(Cursor<Vec<u8>>),
}

/// One read transfer's data, counted; logged when the transfer ends.
pub struct Transfer {
    source: Source,
    peer: SocketAddr,
    file: String,
    bytes: u64,
    finished: bool,
    started: Instant,
    reports: Option<tokio::sync::mpsc::UnboundedSender<TransferEnded>>,
}

impl AsyncRead for Transfer {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = match &mut this.source {
            Source::File(f) => Pin::new(f).poll_read(cx, buf),
            Source::Memory(m) => Pin::new(m).poll_read(cx, buf),
        };
        if let Poll::Ready(Ok(n)) = &r {
            if *n == 0 && !buf.is_empty() {
                this.finished = true;
            }
            this.bytes += *n as u64;
        }
        r
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        tracing::info!(
            peer = %self.peer,
            file = %self.file,
            bytes = self.bytes,
            complete = self.finished,
            ms = self.started.elapsed().as_millis() as u64,
            "tftp transfer ended"
        );
        if let Some(tx) = &self.reports {
            let _ = tx.send(TransferEnded {
                peer: self.peer,
                file: std::mem::take(&mut self.file),
                bytes: self.bytes,
                complete: self.finished,
                millis: self.started.elapsed().as_millis() as u64,
            });
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

/// Serves with a prepared handler (e.g. one with a [`Generator`]).
pub async fn serve_with(
    socket: UdpSocket,
    files: BootFiles,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let addr = socket.local_addr()?;
    let root = files.root().to_path_buf();
    let server = TftpServerBuilder::with_handler(files)
        .std_socket(socket)?
        .timeout(DEFAULT_TIMEOUT)
        .window_size_limit(MAX_WINDOW)
        .max_send_retries(MAX_RETRIES)
        .build()
        .await?;
    tracing::info!(%addr, root = %root.display(), "tftp serving");
    // async-tftp's sockets are driven by async-io's reactor. Polling the server
    // on Tokio would cost a cross-thread wake-up per block; on its own thread
    // under `async_io::block_on` the reactor and the transfers share a thread.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("racklift-tftp".into())
        .spawn(move || {
            let result = async_io::block_on(async {
                let serve = std::pin::pin!(server.serve());
                let stop = std::pin::pin!(shutdown.wait_for(|s| *s));
                match futures::future::select(serve, stop).await {
                    futures::future::Either::Left((r, _)) => {
                        r.map_err(|e| anyhow::anyhow!("TFTP server on {addr} stopped: {e}"))
                    }
                    futures::future::Either::Right(_) => {
                        tracing::info!(%addr, "tftp stopped");
                        Ok(())
                    }
                }
            });
            let _ = done_tx.send(result);
        })?;
    done_rx
        .await
        .map_err(|_| anyhow::anyhow!("TFTP server thread on {addr} ended without a word"))?
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
        assert!(matches!(open_under(&root, "inside"), Ok((_, 2))));
        assert!(matches!(open_under(&root, "link"), Err(OpenError::Outside)));
        assert!(matches!(open_under(&root, "sub"), Err(OpenError::NotFound)));
        assert!(matches!(
            open_under(&root, "nope"),
            Err(OpenError::NotFound)
        ));
    }
}
