//! Network boot: everything a machine talks to before its ramdisk runs.
//!
//! - [`dhcp`]: the DHCPv4 server and proxyDHCP, with the PXE, UEFI HTTP and
//!   iPXE boot answers;
//! - [`dhcp6`]: DHCPv6 requests and replies for network boot (addresses,
//!   option 59 boot file URLs), as pure functions;
//! - [`tftp`]: the TFTP server (boot loaders, generated files);
//! - [`script`]: the iPXE boot script a MAC gets (ramdisk with this boot's
//!   token, local disk, nothing, discovery), from the application's boot view;
//! - [`ra`]: IPv6 router advertisements that tell iPXE there is no router,
//!   so it does not wait for one;
//! - [`http_front`]: the HTTP connection front, which sends boot files with
//!   `sendfile(2)` and hands every other request to the API router.
//!
//! None of them holds SQL: DHCP sees racklift's data through
//! [`dhcp::DhcpBackend`], TFTP serves files (and generators over a lookup
//! interface), the script is rendered from [`crate::app`]'s boot view.

pub mod dhcp;
pub mod dhcp6;
pub mod http_front;
pub mod ra;
pub mod script;
pub mod tftp;
