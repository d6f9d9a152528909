//! The HTTP connection front: boot files with `sendfile(2)`, everything else to axum.
//!
//! Every accepted TCP connection is read here first, one request head at a
//! time. A plain download of a regular file under one of the boot-file
//! mounts ([`mounts`]: `/assets/ramdisk/`, `/assets/ipxe/`, `/assets/`) is
//! answered here: `GET`, no body, no conditional headers, and either no
//! `Range` or one satisfiable byte range. The file's bytes go from the page
//! cache to the socket with `sendfile(2)`, never through a user-space buffer,
//! which is what lets a boot storm pull kernels and images at the rate the
//! machine can move them. The connection stays here while the client keeps
//! asking for such downloads (keep-alive, pipelining).
//!
//! The first request that is anything else (the API, the boot script, a
//! `HEAD`, a conditional or multi-range request, a missing file, a directory,
//! a name with percent-escapes, a malformed head) is handed, with the bytes
//! already read, to hyper's HTTP/1.1 server, which serves the rest of that
//! connection with the router. So every answer this front does not give is the router's
//! own (tower-http's `ServeDir` for the same mounts), and the two agree on
//! what a name means: the front only accepts names made of plain segments
//! that `ServeDir` maps to the same file.
//!
//! A file that shrinks while it is sent ends the connection (the length was
//! promised in the head); it never signals the process, as a memory map would.
//!
//! Every connection lives under the [`Limits`] of `[http]`, on both sides of
//! the hand-off: a request head must be complete within
//! `header_read_timeout` of the connection opening or of its previous answer
//! ending (so an idle keep-alive connection is closed then too); a request
//! in progress that moves no byte for `idle_timeout` (a body the client stops
//! sending, an answer it stops reading) is cut; and past `max_connections`
//! open connections a new one is answered 503 and closed. A handler that
//! takes long, or an event stream waiting for events, is not idle: only the
//! client's silence counts.

use crate::log_limit::LogLimit;
use crate::metrics::Metrics;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::Instrument;

/// The largest request head read before the connection goes to axum (which
/// answers it as it sees fit).
const MAX_HEAD: usize = 16 * 1024;

/// The most one `sendfile` call is asked to move.
const SENDFILE_CHUNK: usize = 4 * 1024 * 1024;

/// The most headers a request may have and still be served here.
const MAX_HEADERS: usize = 48;

/// One boot-file mount: URL prefix (ending in `/`), its label in the request
/// metrics, and the directory it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub prefix: &'static str,
    pub label: &'static str,
    /// The directory's real path, resolved once at start
    /// ([`crate::confined::real_root`]).
    pub dir: PathBuf,
}

/// The boot-file URL prefixes, most specific first, with their label in the
/// request metrics.
const PREFIXES: [(&str, &str); 3] = [
    ("/assets/ramdisk/", "/assets/ramdisk/*"),
    ("/assets/ipxe/", "/assets/ipxe/*"),
    ("/assets/", "/assets/*"),
];

/// The boot-file mounts, most specific first: the ramdisk, the TFTP root
/// (iPXE binaries), then `boot.assets_dir`. The router mounts `ServeDir` on
/// the same list.
pub fn mounts(cfg: &crate::config::Config) -> Vec<Mount> {
    let dirs = [&cfg.boot.ramdisk_dir, &cfg.tftp.root, &cfg.boot.assets_dir];
    PREFIXES
        .iter()
        .zip(dirs)
        .map(|((prefix, label), dir)| Mount {
            prefix,
            label,
            dir: crate::confined::real_root(dir),
        })
        .collect()
}

/// The metrics' route label of a boot-file path (`/assets/ramdisk/*`, ...),
/// the same whether the front or the router answered it.
pub fn route_label(path: &str) -> Option<&'static str> {
    PREFIXES
        .iter()
        .find(|(prefix, _)| path.starts_with(prefix))
        .map(|(_, label)| *label)
}

/// A connection handed to hyper, with the bytes the front already read; a
/// write that cannot go on for `idle` (the client stopped reading) fails.
struct Handoff {
    read: Vec<u8>,
    pos: usize,
    stream: TcpStream,
    stall: Stall,
}

/// How long one side of a request has made no progress: a timer started at
/// the first pending poll, dropped at the next progress.
struct Stall {
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    metrics: Arc<Metrics>,
}

impl Stall {
    fn new(idle: Duration, metrics: Arc<Metrics>) -> Stall {
        Stall {
            idle,
            timer: None,
            metrics,
        }
    }

    /// After a poll that was not pending.
    fn progressed(&mut self) {
        self.timer = None;
    }

    /// After a pending poll: whether it has been pending for `idle` (counted).
    fn over(&mut self, cx: &mut Context<'_>) -> bool {
        let idle = self.idle;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        let over = timer.as_mut().poll(cx).is_ready();
        if over {
            self.metrics.count("http_idle_timeouts");
        }
        over
    }
}

impl Handoff {
    /// Passes a write's result on; one that stayed pending for `idle` fails.
    fn watch<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stall.progressed();
            return r;
        }
        if self.stall.over(cx) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for http.idle_timeout",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for Handoff {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.read.len() {
            let n = (this.read.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.read[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.read.len() {
                this.read = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Handoff {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.watch(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.watch(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The connection limits of `[http]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How long a connection has to send a complete request head, counted
    /// from when it connects or its previous answer ends.
    pub header_read_timeout: Duration,
    /// How long a request in progress may move no byte.
    pub idle_timeout: Duration,
    /// The most connections open at once.
    pub max_connections: usize,
}

impl Limits {
    pub fn from_config(http: &crate::config::HttpConfig) -> Limits {
        Limits {
            header_read_timeout: http.header_read_timeout,
            idle_timeout: http.idle_timeout,
            max_connections: http.max_connections,
        }
    }
}

/// Connections refused past `http.max_connections`: one log line a minute.
static REFUSED: LogLimit = LogLimit::new(Duration::from_secs(60));

/// The answer to a connection past the cap, written without reading its request.
fn refused_answer() -> Vec<u8> {
    let body = r#"{"error":{"code":"too_many_connections","message":"too many open connections; retry shortly"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// What the connections share.
struct Front {
    mounts: Vec<Mount>,
    metrics: Arc<Metrics>,
    limits: Limits,
    router: axum::Router,
}

/// Serves HTTP on `tcp` until `shutdown` turns `true`: every connection is
/// read by the front first, boot-file downloads are answered there, and the
/// rest of a connection is served by `router` over hyper's HTTP/1.1, under
/// the same [`Limits`]. At shut-down it stops accepting, lets each connection
/// finish the request it is in, and returns when all are closed (an event
/// stream never ends by itself: the caller bounds the wait).
pub async fn serve(
    tcp: TcpListener,
    mounts: Vec<Mount>,
    metrics: Arc<Metrics>,
    limits: Limits,
    router: axum::Router,
    shutdown: watch::Receiver<bool>,
) {
    let front = Arc::new(Front {
        mounts,
        metrics,
        limits,
        router,
    });
    let mut conns = tokio::task::JoinSet::new();
    let mut sd = shutdown.clone();
    let stopping = async move {
        let _ = sd.wait_for(|s| *s).await;
    };
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            biased;
            () = &mut stopping => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = tcp.accept() => match accepted {
                Ok((stream, peer)) => {
                    if conns.len() >= front.limits.max_connections {
                        front.refuse(stream, peer);
                        continue;
                    }
                    let (front, shutdown) = (front.clone(), shutdown.clone());
                    conns.spawn(async move { front.connection(stream, peer, shutdown).await });
                }
                Err(e) => {
                    // Out of descriptors and the like: back off, as axum does.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(tcp);
    while conns.join_next().await.is_some() {}
}

/// The request body of a handed-off connection: an error once the client has
/// sent nothing of it for `idle` while it is being read.
struct StallGuard<B> {
    inner: B,
    stall: Stall,
}

impl<B> http_body::Body for StallGuard<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                if this.stall.over(cx) {
                    return Poll::Ready(Some(Err(format!(
                        "the request body stalled for {} ms (http.idle_timeout)",
                        this.stall.idle.as_millis()
                    )
                    .into())));
                }
                Poll::Pending
            }
            Poll::Ready(frame) => {
                this.stall.progressed();
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A download the front answers.
#[derive(Debug, PartialEq, Eq)]
struct Download {
    /// The mount's label in the request metrics.
    route: &'static str,
    /// The mount's directory.
    root: PathBuf,
    path: PathBuf,
    range: Option<ByteRange>,
    keep_alive: bool,
    /// `Connection: keep-alive` must be said (HTTP/1.0).
    say_keep_alive: bool,
}

/// A single `Range: bytes=...` spec, before the file's size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ByteRange {
    /// `a-` or `a-b`.
    From(u64, Option<u64>),
    /// `-n`: the last n bytes.
    Last(u64),
}

impl ByteRange {
    /// Parses one range; `None` for anything else (several ranges, other
    /// units, garbage), which the router answers instead.
    fn parse(value: &[u8]) -> Option<ByteRange> {
        let v = std::str::from_utf8(value).ok()?.trim();
        let spec = v.strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let num = |s: &str| -> Option<u64> {
            if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() {
            return Some(ByteRange::Last(num(b)?));
        }
        let start = num(a)?;
        if b.is_empty() {
            return Some(ByteRange::From(start, None));
        }
        let end = num(b)?;
        (end >= start).then_some(ByteRange::From(start, Some(end)))
    }

    /// The inclusive byte span in a file of `size` bytes, or `None` when it
    /// cannot be satisfied (the router then answers 416).
    fn span(self, size: u64) -> Option<(u64, u64)> {
        if size == 0 {
            return None;
        }
        match self {
            ByteRange::From(start, _) if start >= size => None,
            ByteRange::From(start, end) => Some((start, end.unwrap_or(u64::MAX).min(size - 1))),
            ByteRange::Last(0) => None,
            ByteRange::Last(n) => Some((size.saturating_sub(n), size - 1)),
        }
    }
}

/// Whether `rest` (the path after a mount's prefix) is plain segments that
/// `ServeDir` maps to the same file: letters, digits and `._-~+@`, no empty,
/// `.` or `..` segment, nothing percent-encoded.
fn plain_name(rest: &str) -> bool {
    !rest.is_empty()
        && rest.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"._-~+@".contains(&c))
        })
}

/// Decides whether a parsed request head is a download the front answers.
fn download(req: &httparse::Request<'_, '_>, mounts: &[Mount]) -> Option<Download> {
    if req.method? != "GET" {
        return None;
    }
    let version = req.version?;
    let path = req.path?;
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let (route, dir, rest) = mounts
        .iter()
        .find_map(|m| Some((m.label, &m.dir, path.strip_prefix(m.prefix)?)))?;
    if !plain_name(rest) {
        return None;
    }
    let mut range = None;
    let mut close = false;
    let mut keep = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("range") {
            if range.is_some() {
                return None;
            }
            range = Some(ByteRange::parse(h.value)?);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|c| *c == b',') {
                let t = token.trim_ascii();
                close |= t.eq_ignore_ascii_case(b"close");
                keep |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            if h.value.trim_ascii() != b"0" {
                return None;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
            || name.len() > 3 && name[..3].eq_ignore_ascii_case("if-")
        {
            return None;
        }
    }
    let keep_alive = !close && (version == 1 || keep);
    Some(Download {
        route,
        root: dir.clone(),
        path: dir.join(rest),
        range,
        keep_alive,
        say_keep_alive: keep_alive && version == 0,
    })
}

/// How a request head was read.
enum Head {
    /// A complete head of this many bytes is at the start of the buffer.
    Complete(usize),
    /// Not a head the front reads: too large or not parsable.
    Other,
    /// The peer closed.
    Gone,
    /// No complete head within the header-read timeout.
    TimedOut,
}

impl Front {
    /// One connection: downloads answered here, the rest handed to hyper.
    async fn connection(
        self: Arc<Self>,
        mut stream: TcpStream,
        peer: SocketAddr,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut buf: Vec<u8> = Vec::with_capacity(2048);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let head = tokio::select! {
                h = read_head(&mut stream, &mut buf, self.limits.header_read_timeout) => h,
                _ = shutdown.wait_for(|s| *s), if buf.is_empty() => return,
            };
            let len = match head {
                Head::Gone => return,
                Head::TimedOut => {
                    self.metrics.count("http_header_timeouts");
                    return;
                }
                Head::Other => return self.hand_off(buf, stream, peer, shutdown).await,
                Head::Complete(len) => len,
            };
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            let plan = match req.parse(&buf[..len]) {
                Ok(httparse::Status::Complete(_)) => download(&req, &self.mounts),
                _ => None,
            };
            let Some(plan) = plan else {
                return self.hand_off(buf, stream, peer, shutdown).await;
            };
            let started = Instant::now();
            let opened = {
                let (root, path) = (plan.root.clone(), plan.path.clone());
                tokio::task::spawn_blocking(move || open_regular(&root, &path)).await
            };
            let Ok(Some(file)) = opened else {
                return self.hand_off(buf, stream, peer, shutdown).await;
            };
            let size = file.size;
            let span = match plan.range {
                None => None,
                Some(r) => match r.span(size) {
                    Some(s) => Some(s),
                    None => return self.hand_off(buf, stream, peer, shutdown).await,
                },
            };
            buf.drain(..len);
            let status = if span.is_some() { 206 } else { 200 };
            let request =
                tracing::info_span!("http", method = "GET", route = plan.route, %peer, status);
            let sent = send_file(&mut stream, &file, span, &plan, self.limits.idle_timeout)
                .instrument(request)
                .await;
            self.metrics
                .http_request("GET", plan.route, status, started.elapsed());
            match sent {
                Ok(()) if plan.keep_alive => continue,
                Ok(()) => {
                    let _ = stream.shutdown().await;
                    return;
                }
                Err(e) => {
                    if e.kind() == io::ErrorKind::TimedOut {
                        self.metrics.count("http_idle_timeouts");
                    }
                    tracing::debug!(%peer, file = %plan.path.display(), error = %e, "boot file download cut short");
                    return;
                }
            }
        }
    }

    /// Serves the rest of the connection with the router, over hyper's
    /// HTTP/1.1 with its header-read timer, starting with the bytes read.
    async fn hand_off(
        &self,
        read: Vec<u8>,
        stream: TcpStream,
        peer: SocketAddr,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let io = Handoff {
            read,
            pos: 0,
            stream,
            stall: Stall::new(self.limits.idle_timeout, self.metrics.clone()),
        };
        let (router, idle, metrics) = (
            self.router.clone(),
            self.limits.idle_timeout,
            self.metrics.clone(),
        );
        let service =
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let mut req = req.map(|inner| {
                    axum::body::Body::new(StallGuard {
                        inner,
                        stall: Stall::new(idle, metrics.clone()),
                    })
                });
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                tower::ServiceExt::oneshot(router.clone(), req)
            });
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.limits.header_read_timeout);
        let conn = http1.serve_connection(hyper_util::rt::TokioIo::new(io), service);
        tokio::pin!(conn);
        let stopping = tokio::select! {
            r = conn.as_mut() => Some(r),
            _ = shutdown.wait_for(|s| *s) => None,
        };
        let ended = match stopping {
            Some(r) => r,
            None => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = ended {
            if e.is_timeout() {
                self.metrics.count("http_header_timeouts");
            }
            tracing::debug!(%peer, error = %e, "HTTP connection ended");
        }
    }

    /// Answers a connection past `http.max_connections` with 503 and closes it.
    fn refuse(&self, stream: TcpStream, peer: SocketAddr) {
        self.metrics.count("http_connections_refused");
        if let Some(left_out) = REFUSED.allow() {
            tracing::warn!(
                %peer,
                open = self.limits.max_connections,
                left_out,
                "HTTP connection refused: http.max_connections connections are open"
            );
        }
        let _ = stream.try_write(&refused_answer());
    }
}

/// Reads until `buf` starts with a complete request head, for at most `timeout`.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>, timeout: Duration) -> Head {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(end) = head_end(buf) {
            return Head::Complete(end);
        }
        if buf.len() >= MAX_HEAD {
            return Head::Other;
        }
        // A head that does not start like one goes to axum at once.
        if !buf.is_empty() && !head_may_be_http1(buf) {
            return Head::Other;
        }
        buf.reserve(2048);
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return if buf.is_empty() {
                    Head::Gone
                } else {
                    Head::Other
                };
            }
            Ok(Ok(_)) => {}
            Err(_) => return Head::TimedOut,
        }
    }
}

/// Where the head ends (just past the blank line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Whether the bytes so far could be the start of an HTTP/1 `GET`: the only
/// method the front serves. Anything else (HTTP/2's preface, other methods)
/// goes to axum without waiting for more.
fn head_may_be_http1(buf: &[u8]) -> bool {
    let n = buf.len().min(4);
    buf[..n] == b"GET "[..n]
}

/// A regular file opened for sending.
struct Opened {
    file: std::fs::File,
    size: u64,
    modified: Option<SystemTime>,
}

/// Opens `path` if it is a regular file that resolves under `root`; `None`
/// for anything else (the router answers: 404, a directory's redirect, ...).
fn open_regular(root: &Path, path: &Path) -> Option<Opened> {
    let (file, meta) = crate::confined::open_under(root, path).ok()?;
    Some(Opened {
        size: meta.len(),
        modified: meta.modified().ok(),
        file,
    })
}

/// The response head for a download of `size` bytes (or `span` of them).
fn response_head(
    path: &Path,
    size: u64,
    modified: Option<SystemTime>,
    span: Option<(u64, u64)>,
    plan: &Download,
) -> String {
    use std::fmt::Write;
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let mut h = String::with_capacity(256);
    match span {
        Some((a, b)) => {
            let _ = write!(
                h,
                "HTTP/1.1 206 Partial Content\r\ncontent-range: bytes {a}-{b}/{size}\r\ncontent-length: {}\r\n",
                b - a + 1
            );
        }
        None => {
            let _ = write!(h, "HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n");
        }
    }
    let _ = write!(
        h,
        "content-type: {mime}\r\naccept-ranges: bytes\r\ndate: {}\r\n",
        httpdate::fmt_http_date(SystemTime::now())
    );
    if let Some(m) = modified {
        let _ = write!(h, "last-modified: {}\r\n", httpdate::fmt_http_date(m));
    }
    if !plan.keep_alive {
        h.push_str("connection: close\r\n");
    } else if plan.say_keep_alive {
        h.push_str("connection: keep-alive\r\n");
    }
    h.push_str("\r\n");
    h
}

/// Writes the head, then the file's bytes with `sendfile(2)`.
async fn send_file(
    stream: &mut TcpStream,
    file: &Opened,
    span: Option<(u64, u64)>,
    plan: &Download,
    idle: Duration,
) -> io::Result<()> {
    let stalled = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing for http.idle_timeout",
        )
    };
    let head = response_head(&plan.path, file.size, file.modified, span, plan);
    tokio::time::timeout(idle, stream.write_all(head.as_bytes()))
        .await
        .map_err(|_| stalled())??;
    let (start, end) = span.unwrap_or((0, file.size.saturating_sub(1)));
    if file.size == 0 {
        return Ok(());
    }
    let mut offset = start as libc::off_t;
    let end = end as libc::off_t + 1;
    let (sock, src) = (stream.as_raw_fd(), file.file.as_raw_fd());
    while offset < end {
        tokio::time::timeout(idle, stream.writable())
            .await
            .map_err(|_| stalled())??;
        let want = ((end - offset) as usize).min(SENDFILE_CHUNK);
        let sent = stream.try_io(Interest::WRITABLE, || {
            // SAFETY: both descriptors are open for the duration of the call
            // (owned by `stream` and `file`), and `offset` is a valid pointer.
            let n = unsafe { libc::sendfile(sock, src, &mut offset, want) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        });
        match sent {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file shrank while it was sent",
                ));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts() -> Vec<Mount> {
        vec![
            Mount {
                prefix: "/assets/ramdisk/",
                label: "/assets/ramdisk/*",
                dir: "/rd".into(),
            },
            Mount {
                prefix: "/assets/",
                label: "/assets/*",
                dir: "/a".into(),
            },
        ]
    }

    fn plan(head: &str) -> Option<Download> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(head.as_bytes()).unwrap().is_complete(), "{head}");
        download(&req, &mounts())
    }

    #[test]
    fn plain_downloads_are_served_here() {
        let p = plan("GET /assets/ramdisk/vmlinuz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(p.path, Path::new("/rd/vmlinuz"));
        assert_eq!(p.route, "/assets/ramdisk/*");
        assert!(p.keep_alive && !p.say_keep_alive);
        assert_eq!(p.range, None);
        let p =
            plan("GET /assets/images/disk.raw?x=1 HTTP/1.0\r\nRange: bytes=10-\r\n\r\n").unwrap();
        assert_eq!(p.path, Path::new("/a/images/disk.raw"));
        assert_eq!(p.range, Some(ByteRange::From(10, None)));
        assert!(!p.keep_alive);
        let p = plan("GET /assets/x HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
        assert!(p.keep_alive && p.say_keep_alive);
        let p = plan("GET /assets/x HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!p.keep_alive);
    }

    #[test]
    fn everything_else_goes_to_the_router() {
        for head in [
            "HEAD /assets/x HTTP/1.1\r\n\r\n",
            "POST /assets/x HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
            "GET /boot.ipxe?mac=52:54:00:00:00:01 HTTP/1.1\r\n\r\n",
            "GET /v1/nodes HTTP/1.1\r\n\r\n",
            "GET /assets/ HTTP/1.1\r\n\r\n",
            "GET /assets/images/ HTTP/1.1\r\n\r\n",
            "GET /assets/../secret HTTP/1.1\r\n\r\n",
            "GET /assets/%2e%2e/secret HTTP/1.1\r\n\r\n",
            "GET /assets/a//b HTTP/1.1\r\n\r\n",
            "GET /assets/./b HTTP/1.1\r\n\r\n",
            "GET /assets/a%20b HTTP/1.1\r\n\r\n",
            "GET /assets/x HTTP/1.1\r\nIf-None-Match: \"a\"\r\n\r\n",
            "GET /assets/x HTTP/1.1\r\nIf-Modified-Since: Tue, 01 Dec 2026 00:00:00 GMT\r\n\r\n",
            "GET /assets/x HTTP/1.1\r\nRange: bytes=0-1,5-6\r\n\r\n",
            "GET /assets/x HTTP/1.1\r\nRange: items=0-1\r\n\r\n",
            "GET /assets/x HTTP/1.1\r\nRange: bytes=5-1\r\n\r\n",
            "GET /assets/x HTTP/1.1\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n",
            "GET /assets/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /assets/x HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /assets/x HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
        ] {
            assert_eq!(plan(head), None, "{head}");
        }
    }

    #[test]
    fn ranges_are_resolved_against_the_size() {
        let r = |s: &str| ByteRange::parse(s.as_bytes());
        assert_eq!(r("bytes=1000-1999").unwrap().span(5000), Some((1000, 1999)));
        assert_eq!(
            r("bytes=1000-99999").unwrap().span(5000),
            Some((1000, 4999))
        );
        assert_eq!(r("bytes=4990-").unwrap().span(5000), Some((4990, 4999)));
        assert_eq!(r("bytes=-16").unwrap().span(5000), Some((4984, 4999)));
        assert_eq!(r("bytes=-9000").unwrap().span(5000), Some((0, 4999)));
        assert_eq!(r("bytes=5000-").unwrap().span(5000), None);
        assert_eq!(r("bytes=-0").unwrap().span(5000), None);
        assert_eq!(r("bytes=0-").unwrap().span(0), None);
        assert_eq!(r(" bytes=0-0 ").unwrap().span(1), Some((0, 0)));
        for bad in [
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=1-2-3",
            "1-2",
        ] {
            assert_eq!(r(bad), None, "{bad}");
        }
    }

    #[test]
    fn heads_are_found_and_other_protocols_passed_on() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
        assert!(head_may_be_http1(b"GE"));
        assert!(head_may_be_http1(b"GET /x"));
        assert!(!head_may_be_http1(b"PRI * HTTP/2.0"));
        assert!(!head_may_be_http1(b"POST /v1/nodes"));
    }
}
