//! What the DHCP server needs from the rest of racklift, as one narrow trait:
//! who a MAC is (the directory of enrolled machines and its epoch), a line in
//! a node's history, and the lease rows. [`crate::store::Store`] is the one
//! used in production; [`MemoryBackend`] keeps everything in memory with the
//! same rules, so the handler is unit-tested without a database.

use crate::node::MacAddr;
use crate::store::leases::{Claim, Lease, LeaseClaim, LeaseState};
use crate::store::{DirectoryEntry, Result, Store, now_ms};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;
use uuid::Uuid;

/// The DHCP server's view of racklift's data.
pub trait DhcpBackend: Send + Sync + 'static {
    /// Bumped by every local change to what DHCP knows of a MAC: a directory
    /// read before the last bump is not used.
    fn nodes_epoch(&self) -> u64;
    /// Woken after local changes (the epoch tells whether nodes changed).
    fn changes(&self) -> &Notify;
    /// Every enrolled MAC.
    fn directory(&self) -> impl Future<Output = Result<Vec<DirectoryEntry>>> + Send;
    /// One MAC, looked up alone.
    fn directory_entry(
        &self,
        mac: MacAddr,
    ) -> impl Future<Output = Result<Option<DirectoryEntry>>> + Send;
    /// A line in a node's history.
    fn log_event(&self, node: Uuid, text: &str) -> impl Future<Output = Result<()>> + Send;
    /// The clients that hold a lease row, by subnet.
    fn lease_clients(&self) -> impl Future<Output = Result<Vec<(String, MacAddr)>>> + Send;
    /// See [`Store::claim_lease`].
    fn claim_lease(
        &self,
        c: &LeaseClaim<'_>,
        force: bool,
        move_client: bool,
    ) -> impl Future<Output = Result<Claim>> + Send;
    /// See [`Store::bind_lease`].
    fn bind_lease(
        &self,
        ip: Ipv4Addr,
        mac: MacAddr,
        expires_at: i64,
        hostname: Option<&str>,
        server: &str,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// See [`Store::forget_client_leases`].
    fn forget_client_leases(
        &self,
        subnet: &str,
        mac: MacAddr,
        keep: Option<Ipv4Addr>,
        server: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    /// The lease row of `mac` in `subnet`, whatever its state.
    fn client_lease(
        &self,
        subnet: &str,
        mac: MacAddr,
    ) -> impl Future<Output = Result<Option<Lease>>> + Send;
    /// The lease row of an address.
    fn lease_at(&self, ip: Ipv4Addr) -> impl Future<Output = Result<Option<Lease>>> + Send;
    /// See [`Store::release_lease`].
    fn release_lease(
        &self,
        ip: Ipv4Addr,
        mac: MacAddr,
        server: &str,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// See [`Store::decline_lease`].
    fn decline_lease(
        &self,
        ip: Ipv4Addr,
        mac: MacAddr,
        until: i64,
        server: &str,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Addresses of `subnet` nobody may take now (live leases, quarantines
    /// and profile pools).
    fn unavailable_addresses(
        &self,
        subnet: &str,
    ) -> impl Future<Output = Result<HashSet<Ipv4Addr>>> + Send;
}

impl DhcpBackend for Store {
    fn nodes_epoch(&self) -> u64 {
        Store::nodes_epoch(self)
    }
    fn changes(&self) -> &Notify {
        &self.events_written
    }
    fn directory(&self) -> impl Future<Output = Result<Vec<DirectoryEntry>>> + Send {
        self.dhcp_directory()
    }
    fn directory_entry(
        &self,
        mac: MacAddr,
    ) -> impl Future<Output = Result<Option<DirectoryEntry>>> + Send {
        self.dhcp_directory_entry(mac)
    }
    fn log_event(&self, node: Uuid, text: &str) -> impl Future<Output = Result<()>> + Send {
        Store::log_event(self, node, "dhcp", "dhcp", text)
    }
    fn lease_clients(&self) -> impl Future<Output = Result<Vec<(String, MacAddr)>>> + Send {
        Store::lease_clients(self)
    }
    fn claim_lease(
        &self,
        c: &LeaseClaim<'_>,
        force: bool,
        move_client: bool,
    ) -> impl Future<Output = Result<Claim>> + Send {
        Store::claim_lease(self, c, force, move_client)
    }
    fn bind_lease(
        &self,
        ip: Ipv4Addr,
        mac: MacAddr,
        expires_at: i64,
        hostname: Option<&str>,
        server: &str,
    ) -> impl Future<Output = Result<bool>> + Send {
        Store::bind_lease(self, ip, mac, expires_at, hostname, server)
    }
    fn forget_client_leases(
        &self,
        subnet: &str,
        mac: MacAddr,
        keep: Option<Ipv4Addr>,
        server: &str,
    ) -> impl Future<Output = Result<()>> + Send {
        Store::forget_client_leases(self, subnet, mac, keep, server)
    }
    fn client_lease(
        &self,
        subnet: &str,
        mac: MacAddr,
    ) -> impl Future<Output = Result<Option<Lease>>> + Send {
        Store::client_lease(self, subnet, mac)
    }
    fn lease_at(&self, ip: Ipv4Addr) -> impl Future<Output = Result<Option<Lease>>> + Send {
        Store::lease_at(self, ip)
    }
    fn release_lease(
        &self,
        ip: Ipv4Addr,
        mac: MacAddr,
        server: &str,
    ) -> impl Future<Output = Result<bool>> + Send {
        Store::release_lease(self, ip, mac, server)
    }
    fn decline_lease(
        &self,
        ip: Ipv4Addr,
        mac: MacAddr,
        until: i64,
        server: &str,
    ) -> impl Future<Output = Result<bool>> + Send {
        Store::decline_lease(self, ip, mac, until, server)
    }
    fn unavailable_addresses(
        &self,
        subnet: &str,
    ) -> impl Future<Output = Result<HashSet<Ipv4Addr>>> + Send {
        Store::unavailable_addresses(self, subnet)
    }
}

/// Everything in memory, with the lease rules of [`crate::store::leases`]:
/// an address goes to one client at a time, a client holds at most one
/// address per subnet, a live bound lease is never turned back into an
/// offer, a declined address is quarantined, and pool addresses are
/// reserved except for a node's fixed claim.
#[derive(Default)]
pub struct MemoryBackend {
    nodes: Mutex<Vec<DirectoryEntry>>,
    epoch: AtomicU64,
    changes: Notify,
    leases: Mutex<HashMap<Ipv4Addr, Lease>>,
    /// Addresses a profile pool reserves.
    pub reserved: Mutex<HashSet<Ipv4Addr>>,
    /// Every history line written, by node.
    pub events: Mutex<Vec<(Uuid, String)>>,
}

impl MemoryBackend {
    /// Enrols (or replaces) a MAC's entry, as a node change would.
    pub fn put_node(&self, entry: DirectoryEntry) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.retain(|e| e.mac != entry.mac);
        nodes.push(entry);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.changes.notify_waiters();
    }

    /// Every lease row.
    pub fn leases(&self) -> Vec<Lease> {
        let mut all: Vec<Lease> = self.lock_leases().values().cloned().collect();
        all.sort_by_key(|l| l.ip);
        all
    }

    fn lock_leases(&self) -> std::sync::MutexGuard<'_, HashMap<Ipv4Addr, Lease>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Frees every address `mac` holds in `subnet` but `keep`.
    fn forget(
        leases: &mut HashMap<Ipv4Addr, Lease>,
        subnet: &str,
        mac: MacAddr,
        keep: Option<Ipv4Addr>,
        server: &str,
    ) {
        let now = now_ms();
        for l in leases.values_mut() {
            if l.subnet == subnet && l.mac == Some(mac) && Some(l.ip) != keep {
                l.mac = None;
                l.state = LeaseState::Released;
                l.expires_at_ms = now;
                l.updated_at_ms = now;
                l.server = server.to_string();
            }
        }
    }

    fn claim(&self, c: &LeaseClaim<'_>, force: bool, move_client: bool) -> Claim {
        let now = now_ms();
        let mut leases = self.lock_leases();
        if force || move_client {
            Self::forget(&mut leases, c.subnet, c.mac, Some(c.ip), c.server);
        }
        let reserved = self
            .reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&c.ip);
        if !force && reserved {
            return Claim::Busy;
        }
        let old = leases.get(&c.ip).cloned();
        if let Some(o) = &old
            && !(force || o.expires_at_ms < now || o.mac == Some(c.mac))
        {
            return Claim::Busy;
        }
        let holds_other = leases
            .values()
            .any(|l| l.ip != c.ip && l.subnet == c.subnet && l.mac == Some(c.mac));
        if holds_other {
            return Claim::ClientHasOther;
        }
        let live_bound = old.as_ref().filter(|o| {
            o.mac == Some(c.mac) && o.state == LeaseState::Bound && o.expires_at_ms >= now
        });
        let lease = Lease {
            ip: c.ip,
            subnet: c.subnet.to_string(),
            mac: Some(c.mac),
            state: if live_bound.is_some() {
                LeaseState::Bound
            } else {
                c.state
            },
            hostname: c
                .hostname
                .map(str::to_string)
                .or_else(|| old.as_ref().and_then(|o| o.hostname.clone())),
            expires_at_ms: live_bound.map_or(c.expires_at, |o| o.expires_at_ms.max(c.expires_at)),
            updated_at_ms: now,
            server: c.server.to_string(),
        };
        leases.insert(c.ip, lease);
        Claim::Won
    }

    /// Changes the row at `ip` when `when` holds for it; whether it did.
    fn change(&self, ip: Ipv4Addr, when: impl Fn(&Lease) -> bool, f: impl Fn(&mut Lease)) -> bool {
        let mut leases = self.lock_leases();
        match leases.get_mut(&ip) {
            Some(l) if when(l) => {
                f(l);
                l.updated_at_ms = now_ms();
                true
            }
            _ => false,
        }
    }
}

impl DhcpBackend for MemoryBackend {
    fn nodes_epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }
    fn changes(&self) -> &Notify {
        &self.changes
    }
    async fn directory(&self) -> Result<Vec<DirectoryEntry>> {
        Ok(self.nodes.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
    async fn directory_entry(&self, mac: MacAddr) -> Result<Option<DirectoryEntry>> {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        Ok(nodes.iter().find(|e| e.mac == mac).cloned())
    }
    async fn log_event(&self, node: Uuid, text: &str) -> Result<()> {
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        events.push((node, text.to_string()));
        Ok(())
    }
    async fn lease_clients(&self) -> Result<Vec<(String, MacAddr)>> {
        let leases = self.lock_leases();
        Ok(leases
            .values()
            .filter_map(|l| l.mac.map(|m| (l.subnet.clone(), m)))
            .collect())
    }
    async fn claim_lease(
        &self,
        c: &LeaseClaim<'_>,
        force: bool,
        move_client: bool,
    ) -> Result<Claim> {
        Ok(self.claim(c, force, move_client))
    }
    async fn bind_lease(
        &self,
        ip: Ipv4Addr,
        mac: MacAddr,
        expires_at: i64,
        hostname: Option<&str>,
        server: &str,
    ) -> Result<bool> {
        Ok(self.change(
            ip,
            |l| l.mac == Some(mac) && l.state != LeaseState::Declined,
            |l| {
                l.state = LeaseState::Bound;
                l.expires_at_ms = expires_at;
                if let Some(h) = hostname {
                    l.hostname = Some(h.to_string());
                }
                l.server = server.to_string();
            },
        ))
    }
    async fn forget_client_leases(
        &self,
        subnet: &str,
        mac: MacAddr,
        keep: Option<Ipv4Addr>,
        server: &str,
    ) -> Result<()> {
        Self::forget(&mut self.lock_leases(), subnet, mac, keep, server);
        Ok(())
    }
    async fn client_lease(&self, subnet: &str, mac: MacAddr) -> Result<Option<Lease>> {
        let leases = self.lock_leases();
        Ok(leases
            .values()
            .find(|l| l.subnet == subnet && l.mac == Some(mac))
            .cloned())
    }
    async fn lease_at(&self, ip: Ipv4Addr) -> Result<Option<Lease>> {
        Ok(self.lock_leases().get(&ip).cloned())
    }
    async fn release_lease(&self, ip: Ipv4Addr, mac: MacAddr, server: &str) -> Result<bool> {
        let now = now_ms();
        Ok(self.change(
            ip,
            |l| l.mac == Some(mac) && l.state != LeaseState::Declined,
            |l| {
                l.state = LeaseState::Released;
                l.expires_at_ms = now;
                l.server = server.to_string();
            },
        ))
    }
    async fn decline_lease(
        &self,
        ip: Ipv4Addr,
        mac: MacAddr,
        until: i64,
        server: &str,
    ) -> Result<bool> {
        Ok(self.change(
            ip,
            |l| l.mac == Some(mac),
            |l| {
                l.state = LeaseState::Declined;
                l.mac = None;
                l.expires_at_ms = until;
                l.server = server.to_string();
            },
        ))
    }
    async fn unavailable_addresses(&self, subnet: &str) -> Result<HashSet<Ipv4Addr>> {
        let now = now_ms();
        let mut out: HashSet<Ipv4Addr> = self
            .lock_leases()
            .values()
            .filter(|l| l.subnet == subnet && l.expires_at_ms >= now)
            .map(|l| l.ip)
            .collect();
        out.extend(
            self.reserved
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter(),
        );
        Ok(out)
    }
}
