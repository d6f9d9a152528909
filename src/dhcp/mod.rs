//! DHCP: network boot answers for PXE ROMs, UEFI HTTP boot and iPXE.
//!
//! - [`pxe`]: which boot file a client gets, decided from its request alone.
//!
//! The DHCPv4 server itself (leases in the store, proxyDHCP on ports 67 and
//! 4011) is built on these pieces; like every protocol server here, it decides
//! a reply in a pure function from the request and a node lookup, and never
//! holds SQL.

pub mod pxe;
