//! A UDP proxy between a client and one upstream port (an IPMI BMC), which
//! can lose every Nth packet each way and counts what passed: sessions (the
//! IPMI driver opens each from a fresh port), retransmissions, and how many
//! sessions overlapped. Each test that includes it uses a part.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

#[derive(Debug, Default, Clone)]
pub struct ProxyStats {
    pub to_bmc: u64,
    pub to_client: u64,
    pub dropped_to_bmc: u64,
    pub dropped_to_client: u64,
    /// Packets identical to the one before from the same client (retransmissions).
    pub resent: u64,
    /// The client port of every packet towards the BMC, in arrival order. The
    /// driver opens each session from a fresh port.
    pub order: Vec<u16>,
}

impl ProxyStats {
    pub fn sessions(&self) -> usize {
        let mut ports = self.order.clone();
        ports.sort_unstable();
        ports.dedup();
        ports.len()
    }

    /// The most sessions that had packets both before and after some moment.
    pub fn max_sessions_in_flight(&self) -> usize {
        let mut span: HashMap<u16, (usize, usize)> = HashMap::new();
        for (i, p) in self.order.iter().enumerate() {
            span.entry(*p).and_modify(|s| s.1 = i).or_insert((i, i));
        }
        (0..self.order.len())
            .map(|i| span.values().filter(|(a, b)| *a <= i && i <= *b).count())
            .max()
            .unwrap_or(0)
    }
}

/// Forwards UDP between clients and one upstream port, dropping every
/// `drop_every`-th packet in each direction (0: none).
pub struct Proxy {
    pub port: u16,
    stats: Arc<Mutex<ProxyStats>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: u16, drop_every: u64) -> Proxy {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let port = front.local_addr().unwrap().port();
        let stats = Arc::new(Mutex::new(ProxyStats::default()));
        let st = stats.clone();
        let task = tokio::spawn(async move {
            let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut last: HashMap<SocketAddr, Vec<u8>> = HashMap::new();
            let mut readers = JoinSet::new();
            let mut buf = [0u8; 2048];
            loop {
                let Ok((n, client)) = front.recv_from(&mut buf).await else {
                    continue;
                };
                let packet = buf[..n].to_vec();
                let drop_it = {
                    let mut s = st.lock().unwrap();
                    s.to_bmc += 1;
                    s.order.push(client.port());
                    if last.get(&client) == Some(&packet) {
                        s.resent += 1;
                    }
                    let d = drop_every > 0 && s.to_bmc % drop_every == 0;
                    if d {
                        s.dropped_to_bmc += 1;
                    }
                    d
                };
                last.insert(client, packet.clone());
                if drop_it {
                    continue;
                }
                let back = match backs.get(&client) {
                    Some(b) => b.clone(),
                    None => {
                        let b = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
                        b.connect(("127.0.0.1", upstream)).await.unwrap();
                        let (b2, front2, st2) = (b.clone(), front.clone(), st.clone());
                        readers.spawn(async move {
                            let mut buf = [0u8; 2048];
                            while let Ok(n) = b2.recv(&mut buf).await {
                                let drop_it = {
                                    let mut s = st2.lock().unwrap();
                                    s.to_client += 1;
                                    let d = drop_every > 0 && s.to_client % drop_every == 0;
                                    if d {
                                        s.dropped_to_client += 1;
                                    }
                                    d
                                };
                                if !drop_it {
                                    let _ = front2.send_to(&buf[..n], client).await;
                                }
                            }
                        });
                        backs.insert(client, b.clone());
                        b
                    }
                };
                let _ = back.send(&packet).await;
            }
        });
        Proxy { port, stats, task }
    }

    pub fn stats(&self) -> ProxyStats {
        self.stats.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
