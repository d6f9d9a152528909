//! DHCP: the DHCPv4 server, proxyDHCP, and the network-boot answers for PXE
//! ROMs, UEFI HTTP boot and iPXE.
//!
//! - [`pxe`]: which boot file a client gets, decided from its request alone;
//! - [`reply`]: requests checked, replies built (pure);
//! - [`net`]: the sockets, one per interface and port, bound to the device;
//! - [`server`]: the request handler and the receive loops;
//! - [`backend`]: what the handler needs of racklift's data (the directory
//!   of enrolled MACs, history lines, leases) as one trait, kept by the store
//!   ([`crate::store::leases`]; never SQL here) or, in unit tests, in memory.

pub mod backend;
pub mod net;
pub mod pxe;
pub mod reply;
pub mod server;

pub use backend::{DhcpBackend, MemoryBackend};
pub use net::{DhcpSocket, Iface, Port};
pub use server::{DhcpServer, Outcome};
