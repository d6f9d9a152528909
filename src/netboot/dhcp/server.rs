//! The DHCPv4 server and proxyDHCP: receives on the sockets of [`super::net`],
//! decides with [`super::pxe`] and the store's leases, answers with
//! [`super::reply`].
//!
//! Rules an operator can rely on:
//! - an enrolled node with an address in the subnet always gets that address;
//! - a machine racklift does not know gets an answer only where its subnet has
//!   discovery on;
//! - an address is never given to two clients, however many racklift processes
//!   share the database (see [`crate::store::leases`]);
//! - a NAK is sent only when the client's address is wrong for it (another
//!   network, another client's address, not the node's fixed address), never
//!   because this server has no record of a lease (RFC 2131, 4.3.2);
//! - a malformed or hostile packet is counted and logged, and nothing else.

use super::backend::DhcpBackend;
use super::net::{DhcpSocket, Iface, Port};
use super::pxe::{BootAnswer, BootFiles, ClientInfo, decide};
use super::reply::{Malformed, ReplySpec, Request, build, encode, parse};
use crate::config::{DhcpConfig, DhcpMode, SubnetConfig};
use crate::metrics::Metrics;
use crate::node::MacAddr;
use crate::store::leases::{Claim, LeaseClaim, LeaseState};
use crate::store::{Store, now_ms};
use dhcproto::v4::MessageType;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use std::time::Instant;
use tokio::sync::{Semaphore, watch};
use tracing::Instrument;

/// Requests handled at once per process. Past that, packets are dropped (and
/// counted) rather than queued: a client retransmits, while an answer that
/// comes seconds late is ignored, and an unbounded queue would make every
/// answer late. At the rate one process sustains (about 6,500 exchanges/s on
/// two cores) this many is under 200 ms of waiting: room to ride out a pause
/// of the store without shedding, and never an answer a client gave up on.
const IN_FLIGHT: usize = 1024;
/// How long what the store says of a MAC is reused: enrolling a node or
/// giving it an address shows in DHCP answers within this time.
const NODE_TTL: Duration = Duration::from_secs(2);
/// Entries kept in that cache before it is emptied.
const NODE_CACHE_MAX: usize = 100_000;

/// What DHCP needs of an enrolled node.
#[derive(Debug, Clone)]
struct Known {
    id: uuid::Uuid,
    /// The name the machine is told (option 12): its hostname, else its name.
    hostname: String,
    addresses: Vec<Ipv4Addr>,
}
impl From<crate::store::DirectoryEntry> for Known {
    fn from(e: crate::store::DirectoryEntry) -> Known {
        Known {
            id: e.node_id,
            hostname: e.hostname,
            addresses: e.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
        }
    }
}

/// One MAC looked up alone: when, at which [`Store::nodes_epoch`], and what was found.
type Looked = (Instant, u64, Option<Known>);

/// Every enrolled MAC as read at once from the store.
struct Directory {
    /// When the read started.
    at: Instant,
    /// The store's [`Store::nodes_epoch`] before the read.
    epoch: u64,
    macs: HashMap<MacAddr, Known>,
}

/// Candidate addresses tried one by one before the free ones are listed.
const QUICK_TRIES: u32 = 16;
/// The server's state: configuration, backend (the store in production), metrics and allocation cursors.
/// The server's state: configuration, store, metrics and allocation cursors.
pub struct DhcpServer<B = Store> {
    cfg: DhcpConfig,
    backend: B,
    metrics: Arc<Metrics>,
    files: BootFiles,
    /// Where each subnet's next free-address search starts.
    cursors: Vec<AtomicU32>,
    /// `[discovery] enabled`: unknown machines are answered on every subnet.
    discovery_everywhere: bool,
    /// MAC → enrolled node (or none), with when it was read: the fallback
    /// while the directory is missing or stale.
    nodes: Mutex<HashMap<MacAddr, Looked>>,
    /// Every enrolled MAC, loaded whole by [`DhcpServer::keep_directory`].
    directory: std::sync::RwLock<Option<Directory>>,
    /// The clients that may hold a lease row, by subnet: read once at start,
    /// then every address this process gave. A client not in it has no row,
    /// so its DISCOVER needs no read of its lease (a row another process
    /// made shows up as a refused claim, and the next try reads).
    leased: Mutex<LeaseClients>,
}

/// See [`DhcpServer::leased`].
#[derive(Default)]
struct LeaseClients {
    /// Whether the rows in the store have been read in.
    loaded: bool,
    by_subnet: HashMap<String, std::collections::HashSet<MacAddr>>,
}

/// An answer and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub bytes: Vec<u8>,
    pub to: SocketAddrV4,
}

/// What the handler decided about one packet (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Answer(Answer),
    /// Nothing to say; the reason is counted under this name.
    Silent(&'static str),
}

struct Ctx<'a> {
    req: &'a Request,
    subnet: Option<(usize, &'a SubnetConfig)>,
    server_id: Ipv4Addr,
    node: Option<Known>,
    boot: BootAnswer,
}

fn in_ranges(s: &SubnetConfig, ip: Ipv4Addr) -> bool {
    s.ranges.iter().any(|(a, b)| *a <= ip && ip <= *b)
}

fn range_len(s: &SubnetConfig) -> u32 {
    s.ranges
        .iter()
        .map(|(a, b)| u32::from(*b) - u32::from(*a) + 1)
        .sum()
}

/// The `n`th address of the subnet's ranges.
fn nth_in_ranges(s: &SubnetConfig, mut n: u32) -> Option<Ipv4Addr> {
    for (a, b) in &s.ranges {
        let len = u32::from(*b) - u32::from(*a) + 1;
        if n < len {
            return Some(Ipv4Addr::from(u32::from(*a) + n));
        }
        n -= len;
    }
    None
}

impl<B: DhcpBackend> DhcpServer<B> {
    pub fn new(
        cfg: DhcpConfig,
        public_url: &str,
        discovery_everywhere: bool,
        backend: B,
        metrics: Arc<Metrics>,
    ) -> Self {
        let files = BootFiles {
            api_url: public_url.to_string(),
            snponly: cfg.snponly,
            ..BootFiles::default()
        };
        let cursors = cfg
            .subnets
            .iter()
            .map(|s| AtomicU32::new(rand::random::<u32>() % range_len(s).max(1)))
            .collect();
        DhcpServer {
            cfg,
            backend,
            metrics,
            files,
            cursors,
            discovery_everywhere,
            nodes: Mutex::new(HashMap::new()),
            directory: std::sync::RwLock::new(None),
            leased: Mutex::new(LeaseClients::default()),
        }
    }

    /// Reads in which clients hold lease rows (see [`DhcpServer::leased`]).
    async fn load_lease_clients(&self) -> crate::store::Result<()> {
        let rows = self.backend.lease_clients().await?;
        let mut l = self.leased.lock().unwrap_or_else(|p| p.into_inner());
        for (subnet, mac) in rows {
            l.by_subnet.entry(subnet).or_default().insert(mac);
        }
        l.loaded = true;
        Ok(())
    }

    /// Whether `mac` may hold a lease row in `subnet`.
    fn may_hold_lease(&self, subnet: &str, mac: MacAddr) -> bool {
        let l = self.leased.lock().unwrap_or_else(|p| p.into_inner());
        !l.loaded || l.by_subnet.get(subnet).is_some_and(|m| m.contains(&mac))
    }

    /// Claims an address, and remembers that the client holds a row.
    async fn claim(
        &self,
        c: &LeaseClaim<'_>,
        force: bool,
        move_client: bool,
    ) -> crate::store::Result<Claim> {
        let r = self.backend.claim_lease(c, force, move_client).await?;
        if r == Claim::Won {
            let mut l = self.leased.lock().unwrap_or_else(|p| p.into_inner());
            match l.by_subnet.get_mut(c.subnet) {
                Some(macs) => {
                    macs.insert(c.mac);
                }
                None => {
                    l.by_subnet
                        .insert(c.subnet.to_string(), [c.mac].into_iter().collect());
                }
            }
        }
        Ok(r)
    }

    /// Keeps the directory of enrolled MACs fresh until `shutdown`: one read
    /// of every port every `NODE_TTL / 2`, so a DHCP request costs no lookup
    /// in the store (the directory is never older than [`NODE_TTL`]; when it
    /// cannot be read, lookups go to the store one MAC at a time).
    pub async fn keep_directory(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = self.load_lease_clients().await {
            tracing::warn!(error = %e, "DHCP lease clients not read; every DISCOVER reads its client's lease");
        }
        let mut failing = false;
        loop {
            let epoch = self.backend.nodes_epoch();
            match self.load_directory().await {
                Ok(()) => {
                    if failing {
                        tracing::info!("DHCP directory of enrolled machines read again");
                        failing = false;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "DHCP directory of enrolled machines not read; looking machines up one by one");
                        failing = true;
                    }
                }
            }
            // Read again soon after a local change to the nodes (their events
            // wake this), at the latest after NODE_TTL / 2.
            let deadline = tokio::time::Instant::now() + NODE_TTL / 2;
            loop {
                let changed = tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = self.backend.changes().notified() => self.backend.nodes_epoch() != epoch,
                };
                if changed {
                    // Let a burst of enrolments land first.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    break;
                }
            }
        }
    }

    /// Reads every enrolled MAC into the directory.
    async fn load_directory(&self) -> crate::store::Result<()> {
        let at = Instant::now();
        let epoch = self.backend.nodes_epoch();
        let macs = self
            .backend
            .directory()
            .await?
            .into_iter()
            .map(|e| (e.mac, Known::from(e)))
            .collect();
        *self.directory.write().unwrap_or_else(|p| p.into_inner()) =
            Some(Directory { at, epoch, macs });
        Ok(())
    }

    /// The directory's answer for `mac`, when the directory is fresh and no
    /// local change to the nodes came after its read.
    fn in_directory(&self, mac: MacAddr, now: Instant) -> Option<Option<Known>> {
        let dir = self.directory.read().unwrap_or_else(|p| p.into_inner());
        let d = dir.as_ref()?;
        (now.duration_since(d.at) < NODE_TTL && d.epoch == self.backend.nodes_epoch())
            .then(|| d.macs.get(&mac).cloned())
    }

    /// The enrolled node with this MAC: from the directory when it is fresh,
    /// else read from the store at most every [`NODE_TTL`].
    async fn known(&self, mac: MacAddr) -> crate::store::Result<Option<Known>> {
        let now = std::time::Instant::now();
        if let Some(k) = self.in_directory(mac, now) {
            return Ok(k);
        }
        let epoch = self.backend.nodes_epoch();
        if let Some((at, seen, k)) = self.lock_nodes().get(&mac)
            && now.duration_since(*at) < NODE_TTL
            && *seen == epoch
        {
            return Ok(k.clone());
        }
        let k = self.backend.directory_entry(mac).await?.map(Known::from);
        let mut cache = self.lock_nodes();
        if cache.len() >= NODE_CACHE_MAX {
            cache.clear();
        }
        cache.insert(mac, (now, epoch, k.clone()));
        Ok(k)
    }

    fn lock_nodes(&self) -> std::sync::MutexGuard<'_, HashMap<MacAddr, Looked>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The subnet a request belongs to, and this server's address on it.
    fn subnet_for(&self, req: &Request, iface: &Iface) -> Option<(usize, Ipv4Addr)> {
        let giaddr = req.msg.giaddr();
        let first = iface.addrs.first()?.ip();
        if !giaddr.is_unspecified() {
            let i = self
                .cfg
                .subnets
                .iter()
                .position(|s| s.network.contains(giaddr))?;
            return Some((i, first));
        }
        for a in &iface.addrs {
            if let Some(i) = self
                .cfg
                .subnets
                .iter()
                .position(|s| s.network.contains(a.ip()))
            {
                return Some((i, a.ip()));
            }
        }
        None
    }

    /// Handles one datagram from `src` on `iface`.
    pub async fn handle(
        &self,
        bytes: &[u8],
        src: SocketAddr,
        iface: &Iface,
        port: Port,
    ) -> Outcome {
        match self.check(bytes, src, iface) {
            Ok(req) => self.handle_request(&req, src, iface, port).await,
            Err(silent) => silent,
        }
    }

    /// Parses a datagram; a malformed one is counted, logged and dropped here,
    /// before it can take a place among the requests being answered.
    pub fn check(&self, bytes: &[u8], src: SocketAddr, iface: &Iface) -> Result<Request, Outcome> {
        parse(bytes).map_err(|e| self.malformed(e, src, iface))
    }

    /// Answers a well-formed request, in a span naming the client (every
    /// line logged while answering carries it).
    pub async fn handle_request(
        &self,
        req: &Request,
        src: SocketAddr,
        iface: &Iface,
        port: Port,
    ) -> Outcome {
        let span = tracing::info_span!("dhcp", mac = %req.mac, kind = ?req.kind, xid = req.msg.xid(), iface = %iface.name, port = ?port);
        let started = Instant::now();
        let answered = self
            .answer(req, src, iface, port)
            .instrument(span.clone())
            .await;
        // No await from here on: the span stays entered to the end.
        let _in_span = span.enter();
        let out = match answered {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(mac = %req.mac, error = %e, "DHCP request not answered: store unavailable");
                Outcome::Silent("store_error")
            }
        };
        match &out {
            Outcome::Answer(_) => self.metrics.count("dhcp_answered"),
            Outcome::Silent(why) => self.metrics.count(&format!("dhcp_silent_{why}")),
        }
        if port == Port::PxeBoot
            && let Outcome::Silent(why) = &out
        {
            // A PXE client waiting here for its boot file gets none: it will
            // say "No valid offer received" and try something else.
            self.metrics.count("dhcp_boot_service_unanswered");
            if *why == "unknown_client" {
                tracing::debug!(mac = %req.mac, %src, "PXE boot-service request (UDP 4011) from a machine racklift does not serve");
            } else {
                tracing::warn!(mac = %req.mac, %src, kind = ?req.kind, why, "PXE boot-service request (UDP 4011) not answered");
            }
        }
        self.metrics
            .observe("dhcp_request_duration_seconds", started.elapsed());
        out
    }

    fn malformed(&self, e: Malformed, src: SocketAddr, iface: &Iface) -> Outcome {
        tracing::debug!(%src, iface = %iface.name, error = %e, "malformed DHCP packet dropped");
        self.metrics.count("dhcp_malformed");
        Outcome::Silent("malformed")
    }

    async fn answer(
        &self,
        req: &Request,
        src: SocketAddr,
        iface: &Iface,
        port: Port,
    ) -> crate::store::Result<Outcome> {
        self.metrics.count(match req.kind {
            MessageType::Discover => "dhcp_received_discover",
            MessageType::Request => "dhcp_received_request",
            MessageType::Release => "dhcp_received_release",
            MessageType::Decline => "dhcp_received_decline",
            MessageType::Inform => "dhcp_received_inform",
            _ => "dhcp_received_other",
        });
        let (subnet, server_id) = match self.subnet_for(req, iface) {
            Some((i, sid)) => (Some((i, &self.cfg.subnets[i])), sid),
            None if self.cfg.mode == DhcpMode::Proxy => match iface.addrs.first() {
                Some(a) => (None, a.ip()),
                None => return Ok(Outcome::Silent("no_subnet")),
            },
            None => return Ok(Outcome::Silent("no_subnet")),
        };
        let node = self.known(req.mac).await?;
        let discovery = self.discovery_everywhere || subnet.is_some_and(|(_, s)| s.discovery);
        if node.is_none() && !discovery {
            tracing::debug!(mac = %req.mac, iface = %iface.name, "not enrolled and discovery is off: no answer");
            return Ok(Outcome::Silent("unknown_client"));
        }
        let boot = decide(&ClientInfo::from_request(&req.msg), req.mac, &self.files);
        let ctx = Ctx {
            req,
            subnet,
            server_id,
            node,
            boot,
        };
        let out = match (self.cfg.mode, port) {
            (DhcpMode::Server, Port::Dhcp) => self.assign(&ctx).await?,
            (DhcpMode::Proxy, Port::Dhcp) if req.kind == MessageType::Discover => {
                self.proxy(&ctx, broadcast(self.cfg.port + 1))
            }
            (_, Port::PxeBoot)
                if matches!(req.kind, MessageType::Request | MessageType::Inform) =>
            {
                self.metrics.count("dhcp_boot_service_requests");
                match src {
                    SocketAddr::V4(to) => self.proxy(&ctx, to),
                    SocketAddr::V6(_) => Outcome::Silent("ignored"),
                }
            }
            _ => Outcome::Silent("ignored"),
        };

        if let (Some(n), Outcome::Answer(a)) = (&ctx.node, &out) {
            let text = describe(req, a, &ctx.boot);
            self.backend.log_event(n.id, &text).await?;
        }
        Ok(out)
    }

    /// proxyDHCP: the boot part only, no address.
    fn proxy(&self, c: &Ctx<'_>, to: SocketAddrV4) -> Outcome {
        if matches!(
            c.boot,
            BootAnswer::NotNetboot | BootAnswer::Unsupported { .. }
        ) {
            return Outcome::Silent("not_netboot");
        }
        let kind = if c.req.kind == MessageType::Discover {
            MessageType::Offer
        } else {
            MessageType::Ack
        };
        let next = c
            .subnet
            .and_then(|(_, s)| s.next_server)
            .unwrap_or(c.server_id);
        let m = build(
            c.req,
            &ReplySpec {
                kind,
                yiaddr: Ipv4Addr::UNSPECIFIED,
                server_id: c.server_id,
                subnet: None,
                lease_secs: None,
                boot: &c.boot,
                next_server: next,
                proxy: true,
                hostname: None,
                message: None,
            },
        );
        Outcome::Answer(Answer {
            bytes: encode(&m),
            to,
        })
    }

    /// The full server's answer: an address (DORA, renewals, releases, declines) and boot options.
    async fn assign(&self, c: &Ctx<'_>) -> crate::store::Result<Outcome> {
        let Some((idx, sub)) = c.subnet else {
            return Ok(Outcome::Silent("no_subnet"));
        };
        let req = c.req;
        let fixed = c.node.as_ref().and_then(|n| {
            n.addresses
                .iter()
                .copied()
                .find(|ip| sub.network.contains(*ip))
        });
        let hostname = c.node.as_ref().map(|n| n.hostname.clone());
        let tag = c.server_id.to_string();
        let now = now_ms();
        let lease_ms = sub.lease_time.as_millis() as i64;
        let reply = |kind: MessageType, yiaddr: Ipv4Addr, message: Option<&str>| {
            let lease =
                matches!(kind, MessageType::Offer | MessageType::Ack) && !yiaddr.is_unspecified();
            let m = build(
                req,
                &ReplySpec {
                    kind,
                    yiaddr,
                    server_id: c.server_id,
                    subnet: (kind != MessageType::Nak).then_some(sub),
                    lease_secs: lease.then(|| sub.lease_time.as_secs().min(u32::MAX as u64) as u32),
                    boot: &c.boot,
                    next_server: sub.next_server.unwrap_or(c.server_id),
                    proxy: false,
                    hostname: hostname.as_deref(),
                    message,
                },
            );
            Outcome::Answer(Answer {
                bytes: encode(&m),
                to: self.destination(req, kind),
            })
        };
        match req.kind {
            MessageType::Discover => {
                let hold = now + self.cfg.offer_hold.as_millis() as i64;
                match self.allocate(idx, sub, req, fixed, hold, &tag).await? {
                    Some(ip) => Ok(reply(MessageType::Offer, ip, None)),
                    None => {
                        self.metrics.count("dhcp_pool_exhausted");
                        tracing::warn!(subnet = %sub.network, mac = %req.mac, "no free address left in the subnet's ranges");
                        Ok(Outcome::Silent("pool_exhausted"))
                    }
                }
            }
            MessageType::Request => {
                let sid = req.server_id();
                if sid.is_some_and(|s| s != c.server_id) {
                    // The client took another server's offer: free ours at once.
                    if let Some(l) = self
                        .backend
                        .client_lease(&sub.network.to_string(), req.mac)
                        .await?
                        && l.state == LeaseState::Offered
                    {
                        self.backend.release_lease(l.ip, req.mac, &tag).await?;
                    }
                    return Ok(Outcome::Silent("other_server"));
                }
                let ciaddr = req.msg.ciaddr();
                let Some(ip) = req
                    .requested_ip()
                    .or((!ciaddr.is_unspecified()).then_some(ciaddr))
                else {
                    return Ok(Outcome::Silent("no_address_asked"));
                };
                if !sub.network.contains(ip) {
                    return Ok(if sid.is_none() {
                        reply(
                            MessageType::Nak,
                            Ipv4Addr::UNSPECIFIED,
                            Some("wrong network"),
                        )
                    } else {
                        Outcome::Silent("ignored")
                    });
                }
                if let Some(f) = fixed
                    && f != ip
                {
                    let text = format!("this machine's address is {f}");
                    return Ok(reply(MessageType::Nak, Ipv4Addr::UNSPECIFIED, Some(&text)));
                }
                let expires = now + lease_ms;
                if self
                    .backend
                    .bind_lease(ip, req.mac, expires, req.hostname(), &tag)
                    .await?
                {
                    return Ok(reply(MessageType::Ack, ip, None));
                }
                if fixed.is_none() && !in_ranges(sub, ip) {
                    return Ok(reply(
                        MessageType::Nak,
                        Ipv4Addr::UNSPECIFIED,
                        Some("address not served here"),
                    ));
                }
                // No record of this client on that address (a restarted
                // client, or an expired lease): give it if it is free.
                let claim = LeaseClaim {
                    ip,
                    subnet: &sub.network.to_string(),
                    mac: req.mac,
                    state: LeaseState::Bound,
                    hostname: req.hostname(),
                    expires_at: expires,
                    server: &tag,
                };
                match self.claim(&claim, fixed.is_some(), true).await? {
                    Claim::Won => Ok(reply(MessageType::Ack, ip, None)),
                    Claim::Busy | Claim::ClientHasOther => Ok(reply(
                        MessageType::Nak,
                        Ipv4Addr::UNSPECIFIED,
                        Some("address in use"),
                    )),
                }
            }
            MessageType::Release => {
                self.backend
                    .release_lease(req.msg.ciaddr(), req.mac, &tag)
                    .await?;
                Ok(Outcome::Silent("released"))
            }
            MessageType::Decline => {
                if let Some(ip) = req.requested_ip() {
                    let until = now + self.cfg.decline_quarantine.as_millis() as i64;
                    if self.backend.decline_lease(ip, req.mac, until, &tag).await? {
                        self.metrics.count("dhcp_declined");
                        tracing::warn!(%ip, mac = %req.mac, "address declined by the client (in use by someone else?): quarantined");
                    }
                }
                Ok(Outcome::Silent("declined"))
            }
            MessageType::Inform => Ok(reply(MessageType::Ack, Ipv4Addr::UNSPECIFIED, None)),
            _ => Ok(Outcome::Silent("ignored")),
        }
    }

    /// An address for a DISCOVER: the node's fixed one, the client's previous
    /// one, the one it asks for, or the next free one.
    async fn allocate(
        &self,
        idx: usize,
        sub: &SubnetConfig,
        req: &Request,
        fixed: Option<Ipv4Addr>,
        hold: i64,
        tag: &str,
    ) -> crate::store::Result<Option<Ipv4Addr>> {
        let subnet = sub.network.to_string();
        let claim = |ip, state, expires_at| LeaseClaim {
            ip,
            subnet: &subnet,
            mac: req.mac,
            state,
            hostname: req.hostname(),
            expires_at,
            server: tag,
        };
        if let Some(ip) = fixed {
            let keep = self.backend.lease_at(ip).await?.filter(|l| {
                l.mac == Some(req.mac) && l.state == LeaseState::Bound && l.expires_at_ms > hold
            });
            let (state, exp) = match keep {
                Some(l) => (LeaseState::Bound, l.expires_at_ms),
                None => (LeaseState::Offered, hold),
            };
            return Ok(
                match self.claim(&claim(ip, state, exp), true, true).await? {
                    Claim::Won => Some(ip),
                    _ => None,
                },
            );
        }
        let now = now_ms();
        for attempt in 0..3 {
            let lease = if attempt > 0 || self.may_hold_lease(&subnet, req.mac) {
                self.backend.client_lease(&subnet, req.mac).await?
            } else {
                None
            };
            if let Some(l) = lease {
                if in_ranges(sub, l.ip) {
                    let (state, exp) = if l.state == LeaseState::Bound && l.expires_at_ms > now {
                        (LeaseState::Bound, l.expires_at_ms.max(hold))
                    } else {
                        (LeaseState::Offered, hold)
                    };
                    match self.claim(&claim(l.ip, state, exp), false, false).await? {
                        Claim::Won => return Ok(Some(l.ip)),
                        Claim::Busy => {}
                        Claim::ClientHasOther => continue,
                    }
                } else {
                    // The ranges changed since: that address is not served any more.
                    self.backend
                        .forget_client_leases(&subnet, req.mac, None, tag)
                        .await?;
                }
            }
            if let Some(ip) = req.requested_ip().filter(|ip| in_ranges(sub, *ip)) {
                match self
                    .claim(&claim(ip, LeaseState::Offered, hold), false, false)
                    .await?
                {
                    Claim::Won => return Ok(Some(ip)),
                    Claim::Busy => {}
                    Claim::ClientHasOther => continue,
                }
            }
            let total = range_len(sub);
            let mut raced = false;
            for _ in 0..QUICK_TRIES.min(total) {
                let n = self.cursors[idx].fetch_add(1, Ordering::Relaxed) % total;
                let Some(ip) = nth_in_ranges(sub, n) else {
                    break;
                };
                match self
                    .claim(&claim(ip, LeaseState::Offered, hold), false, false)
                    .await?
                {
                    Claim::Won => return Ok(Some(ip)),
                    Claim::Busy => {}
                    Claim::ClientHasOther => {
                        raced = true;
                        break;
                    }
                }
            }
            if raced {
                continue;
            }
            // The quick tries met busy addresses: list what is free.
            let taken = self.backend.unavailable_addresses(&subnet).await?;
            let free = (0..total)
                .filter_map(|n| nth_in_ranges(sub, n))
                .filter(|ip| !taken.contains(ip));
            for ip in free.take(QUICK_TRIES as usize) {
                match self
                    .claim(&claim(ip, LeaseState::Offered, hold), false, false)
                    .await?
                {
                    Claim::Won => {
                        let n = u32::from(ip) - u32::from(sub.ranges[0].0);
                        self.cursors[idx].store(n.wrapping_add(1), Ordering::Relaxed);
                        return Ok(Some(ip));
                    }
                    Claim::Busy => {}
                    Claim::ClientHasOther => {
                        raced = true;
                        break;
                    }
                }
            }
            if !raced {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Where a reply goes (RFC 2131, 4.1): the relay, the client's address
    /// when it has one, else a broadcast on the link.
    fn destination(&self, req: &Request, kind: MessageType) -> SocketAddrV4 {
        let q = &req.msg;
        if !q.giaddr().is_unspecified() {
            return SocketAddrV4::new(q.giaddr(), self.cfg.port);
        }
        if kind != MessageType::Nak && !q.ciaddr().is_unspecified() {
            return SocketAddrV4::new(q.ciaddr(), self.cfg.port + 1);
        }
        broadcast(self.cfg.port + 1)
    }
}

fn broadcast(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::BROADCAST, port)
}

fn kind_name(k: MessageType) -> &'static str {
    match k {
        MessageType::Discover => "discover",
        MessageType::Request => "request",
        MessageType::Release => "release",
        MessageType::Decline => "decline",
        MessageType::Inform => "inform",
        _ => "other",
    }
}

/// The event text of an answer to a known node.
fn describe(req: &Request, a: &Answer, boot: &BootAnswer) -> String {
    let reply = parse_reply_kind(&a.bytes);
    let yiaddr = a
        .bytes
        .get(16..20)
        .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let what = match boot {
        BootAnswer::Tftp { file } => format!(", boot file {file} over TFTP"),
        BootAnswer::Http { url } => format!(", boot URL {url}"),
        BootAnswer::Script { url } => format!(", iPXE script {url}"),
        BootAnswer::Unsupported { arch } => format!(", no boot file for architecture {arch}"),
        BootAnswer::NotNetboot => String::new(),
    };
    let addr = if yiaddr.is_unspecified() {
        String::new()
    } else {
        format!(" {yiaddr}")
    };
    format!(
        "DHCP {} from {} answered with {}{addr}{what}",
        kind_name(req.kind).to_uppercase(),
        req.mac,
        reply
    )
}

fn parse_reply_kind(bytes: &[u8]) -> &'static str {
    use dhcproto::Decodable;
    match dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(bytes))
        .ok()
        .and_then(|m| m.opts().msg_type())
    {
        Some(MessageType::Offer) => "OFFER",
        Some(MessageType::Ack) => "ACK",
        Some(MessageType::Nak) => "NAK",
        _ => "a reply",
    }
}

/// Serves every socket until `shutdown`, on a thread of its own.
///
/// The whole DHCP path (receive, decide, reply) runs on one single-threaded
/// runtime: a request's steps never hop between worker threads, so a boot
/// storm costs no thread wake-ups beyond the lease writer's (measured: the
/// hand-offs between the shared runtime's workers took most of the CPU).
pub async fn serve<B: DhcpBackend>(
    server: Arc<DhcpServer<B>>,
    sockets: Vec<DhcpSocket>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("racklift-dhcp".into())
        .spawn(move || {
            let r = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|rt| rt.block_on(serve_here(server, sockets, shutdown)));
            let _ = done.send(r);
        })?;
    finished
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("the DHCP thread stopped")))
}

async fn serve_here<B: DhcpBackend>(
    server: Arc<DhcpServer<B>>,
    sockets: Vec<DhcpSocket>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limit = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::new();
    for s in sockets {
        let sock = Arc::new(tokio::net::UdpSocket::from_std(s.socket)?);
        let iface = Arc::new(s.iface);
        let port = s.port;
        let server = server.clone();
        let limit = limit.clone();
        let mut sd = shutdown.clone();
        tracing::info!(iface = %iface.name, port = ?port, "DHCP listening");
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, src) = tokio::select! {
                    _ = sd.wait_for(|s| *s) => return,
                    r = sock.recv_from(&mut buf) => match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!(iface = %iface.name, error = %e, "DHCP receive failed");
                            continue;
                        }
                    },
                };
                let Ok(req) = server.check(&buf[..n], src, &iface) else {
                    continue;
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    server.metrics.count("dhcp_dropped_overload");
                    continue;
                };
                let (server, sock, iface) = (server.clone(), sock.clone(), iface.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Outcome::Answer(a) = server.handle_request(&req, src, &iface, port).await
                        && let Err(e) = sock.send_to(&a.bytes, a.to).await
                    {
                        tracing::warn!(to = %a.to, error = %e, "DHCP reply not sent");
                    }
                });
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_walked_in_order() {
        let s = SubnetConfig {
            network: "10.0.0.0/24".parse().unwrap(),
            ranges: vec![
                ("10.0.0.10".parse().unwrap(), "10.0.0.11".parse().unwrap()),
                ("10.0.0.20".parse().unwrap(), "10.0.0.20".parse().unwrap()),
            ],
            router: None,
            dns_servers: vec![],
            domain: None,
            next_server: None,
            lease_time: std::time::Duration::from_secs(60),
            discovery: false,
        };
        assert_eq!(range_len(&s), 3);
        let all: Vec<String> = (0..4)
            .filter_map(|n| nth_in_ranges(&s, n))
            .map(|ip| ip.to_string())
            .collect();
        assert_eq!(all, ["10.0.0.10", "10.0.0.11", "10.0.0.20"]);
        assert!(in_ranges(&s, "10.0.0.20".parse().unwrap()));
        assert!(!in_ranges(&s, "10.0.0.12".parse().unwrap()));
    }

    /// What DHCP knows of a MAC follows this process's own changes at once,
    /// whether it comes from the directory or from a lookup.
    #[tokio::test]
    async fn the_directory_follows_local_changes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::Config::defaults();
        let store = Store::open(
            &format!("sqlite://{}/t.db", dir.path().display()),
            2,
            crate::secrets::SecretBox::from_key(&[7; 32]),
            cfg.conductor.timeouts.clone(),
        )
        .await
        .unwrap();
        let server = DhcpServer::new(
            cfg.dhcp.clone(),
            "http://127.0.0.1:8080",
            false,
            store.clone(),
            Arc::new(Metrics::default()),
        );
        let mac: MacAddr = "52:54:00:aa:00:01".parse().unwrap();
        let other: MacAddr = "52:54:00:aa:00:02".parse().unwrap();
        // Looked up (and remembered as unknown) before there is a directory.
        assert!(server.known(mac).await.unwrap().is_none());
        server.load_directory().await.unwrap();
        assert!(matches!(
            server.in_directory(mac, Instant::now()),
            Some(None)
        ));

        let new: crate::node::NewNode = serde_json::from_value(serde_json::json!({
            "name": "n1", "boot_mac": mac.to_string(), "bmc": {"driver": "none"}
        }))
        .unwrap();
        let node = store.create_node(&new, "test").await.unwrap();
        // The directory predates the enrolment: not used, and not the
        // remembered "unknown" either.
        assert!(server.in_directory(mac, Instant::now()).is_none());
        let k = server.known(mac).await.unwrap().expect("known at once");
        assert_eq!((k.id, k.hostname.as_str()), (node.id, "n1"));

        server.load_directory().await.unwrap();
        let k = server
            .in_directory(mac, Instant::now())
            .expect("a fresh directory")
            .expect("the node is in it");
        assert_eq!(k.id, node.id);
        assert!(matches!(
            server.in_directory(other, Instant::now()),
            Some(None)
        ));
        // Old directories are not used.
        assert!(
            server
                .in_directory(mac, Instant::now() + NODE_TTL + Duration::from_millis(1))
                .is_none()
        );

        store.delete_node("n1", "test").await.unwrap();
        assert!(
            server.known(mac).await.unwrap().is_none(),
            "deleted at once"
        );
        store.close().await;
    }
    // --- the handler against the in-memory backend ---------------------------

    use crate::netboot::dhcp::backend::MemoryBackend;
    use dhcproto::v4::{DhcpOption, Message, OptionCode};
    use dhcproto::{Decodable, Decoder, Encodable, Encoder};

    const SERVER: &str = "10.9.0.1";

    fn subnet(first: &str, last: &str, discovery: bool) -> SubnetConfig {
        SubnetConfig {
            network: "10.9.0.0/24".parse().unwrap(),
            ranges: vec![(first.parse().unwrap(), last.parse().unwrap())],
            router: None,
            dns_servers: vec![],
            domain: None,
            next_server: None,
            lease_time: Duration::from_secs(600),
            discovery,
        }
    }

    fn memory_server(sub: SubnetConfig) -> DhcpServer<MemoryBackend> {
        let mut cfg = crate::config::Config::defaults().dhcp;
        cfg.subnets = vec![sub];
        DhcpServer::new(
            cfg,
            "http://10.9.0.1:8080",
            false,
            MemoryBackend::default(),
            Arc::new(Metrics::default()),
        )
    }

    fn iface() -> Iface {
        Iface {
            name: "rl-test".into(),
            addrs: vec![format!("{SERVER}/24").parse().unwrap()],
        }
    }

    /// A client's message, as a PXE ROM would send it.
    fn packet(kind: MessageType, mac: MacAddr, options: Vec<DhcpOption>) -> Vec<u8> {
        let mut m = Message::default();
        m.set_chaddr(&mac.0);
        m.set_xid(0x1234_5678);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        for o in options {
            m.opts_mut().insert(o);
        }
        let mut out = Vec::new();
        m.encode(&mut Encoder::new(&mut out)).unwrap();
        out
    }

    /// Sends one message on port 67; the decoded answer, if any.
    async fn ask(
        s: &DhcpServer<MemoryBackend>,
        kind: MessageType,
        mac: MacAddr,
        options: Vec<DhcpOption>,
    ) -> Option<Message> {
        let src: SocketAddr = "0.0.0.0:68".parse().unwrap();
        match s
            .handle(&packet(kind, mac, options), src, &iface(), Port::Dhcp)
            .await
        {
            Outcome::Answer(a) => Some(Message::decode(&mut Decoder::new(&a.bytes)).unwrap()),
            Outcome::Silent(_) => None,
        }
    }

    /// DISCOVER then REQUEST of the offered address: the ACK's address.
    async fn dora(s: &DhcpServer<MemoryBackend>, mac: MacAddr) -> Ipv4Addr {
        let offer = ask(s, MessageType::Discover, mac, vec![])
            .await
            .expect("an offer");
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        let ip = offer.yiaddr();
        let ack = ask(
            s,
            MessageType::Request,
            mac,
            vec![
                DhcpOption::RequestedIpAddress(ip),
                DhcpOption::ServerIdentifier(SERVER.parse().unwrap()),
            ],
        )
        .await
        .expect("an answer to the request");
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(ack.yiaddr(), ip);
        ip
    }

    fn lease_of(b: &MemoryBackend, mac: MacAddr) -> Option<crate::store::leases::Lease> {
        b.leases().into_iter().find(|l| l.mac == Some(mac))
    }

    #[tokio::test]
    async fn an_unknown_machine_on_a_discovery_subnet_gets_an_address_and_keeps_it() {
        let s = memory_server(subnet("10.9.0.100", "10.9.0.199", true));
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let ip = dora(&s, mac).await;
        assert!(in_ranges(&s.cfg.subnets[0], ip), "{ip}");
        let l = lease_of(&s.backend, mac).expect("a lease row");
        assert_eq!((l.ip, l.state), (ip, LeaseState::Bound));
        // Back again: the same address.
        assert_eq!(dora(&s, mac).await, ip);
        // Another machine: another address.
        let other: MacAddr = "52:54:00:00:00:02".parse().unwrap();
        assert_ne!(dora(&s, other).await, ip);
    }

    #[tokio::test]
    async fn an_unknown_machine_is_not_answered_without_discovery() {
        let s = memory_server(subnet("10.9.0.100", "10.9.0.199", false));
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        assert!(ask(&s, MessageType::Discover, mac, vec![]).await.is_none());
        assert!(s.backend.leases().is_empty());
    }

    #[tokio::test]
    async fn an_enrolled_machine_gets_its_own_address_and_name_and_a_history_line() {
        let s = memory_server(subnet("10.9.0.100", "10.9.0.199", false));
        let mac: MacAddr = "52:54:00:00:00:03".parse().unwrap();
        let id = uuid::Uuid::new_v4();
        s.backend.put_node(crate::store::DirectoryEntry {
            mac,
            node_id: id,
            hostname: "web-01".into(),
            addresses: vec!["10.9.0.50".into()],
        });
        let offer = ask(&s, MessageType::Discover, mac, vec![])
            .await
            .expect("an offer");
        assert_eq!(offer.yiaddr(), "10.9.0.50".parse::<Ipv4Addr>().unwrap());
        assert!(
            matches!(offer.opts().get(OptionCode::Hostname), Some(DhcpOption::Hostname(h)) if h == "web-01"),
            "{:?}",
            offer.opts()
        );
        assert_eq!(
            dora(&s, mac).await,
            "10.9.0.50".parse::<Ipv4Addr>().unwrap()
        );
        let events = s.backend.events.lock().unwrap().clone();
        assert!(events.iter().any(|(n, _)| *n == id), "{events:?}");
    }

    #[tokio::test]
    async fn a_declined_address_is_quarantined_and_pool_addresses_are_never_offered() {
        // Three addresses: one a profile pool reserves, one declined.
        let s = memory_server(subnet("10.9.0.100", "10.9.0.102", true));
        s.backend
            .reserved
            .lock()
            .unwrap()
            .insert("10.9.0.101".parse().unwrap());
        let a: MacAddr = "52:54:00:00:00:0a".parse().unwrap();
        let offer = ask(&s, MessageType::Discover, a, vec![]).await.unwrap();
        let first = offer.yiaddr();
        assert_ne!(first, "10.9.0.101".parse::<Ipv4Addr>().unwrap());
        assert!(
            ask(
                &s,
                MessageType::Decline,
                a,
                vec![
                    DhcpOption::RequestedIpAddress(first),
                    DhcpOption::ServerIdentifier(SERVER.parse().unwrap()),
                ],
            )
            .await
            .is_none()
        );
        let declined = s
            .backend
            .leases()
            .into_iter()
            .find(|l| l.ip == first)
            .unwrap();
        assert_eq!((declined.state, declined.mac), (LeaseState::Declined, None));
        // The only address left is the third one, for anybody.
        let b: MacAddr = "52:54:00:00:00:0b".parse().unwrap();
        let second = dora(&s, b).await;
        assert_ne!(second, first);
        assert_ne!(second, "10.9.0.101".parse::<Ipv4Addr>().unwrap());
        // None left: a third machine gets no offer.
        let c: MacAddr = "52:54:00:00:00:0c".parse().unwrap();
        assert!(ask(&s, MessageType::Discover, c, vec![]).await.is_none());
    }
}
