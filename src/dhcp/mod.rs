//! DHCP: the DHCPv4 server, proxyDHCP, and the network-boot answers for PXE
//! ROMs, UEFI HTTP boot and iPXE.
//!
//! - [`pxe`]: which boot file a client gets, decided from its request alone;
//! - [`reply`]: requests checked, replies built (pure);
//! - [`net`]: the sockets, one per interface and port, bound to the device;
//! - [`server`]: the request handler and the receive loops; leases live in the
//!   store ([`crate::store::leases`]), never in SQL here.

pub mod net;
pub mod pxe;
pub mod reply;
pub mod server;

pub use net::{DhcpSocket, Iface, Port};
pub use server::{DhcpServer, Outcome};
