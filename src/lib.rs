//! racklift: a bare-metal provisioning server.
//!
//! The library holds every part; the `racklift` binary (server and CLI) and the
//! `racklift-agent` binary (the ramdisk's program) are thin shells around it.
//! See `docs/ARCHITECTURE.md` for the code map and the invariants.

pub mod agent;
pub mod api;
pub mod app;
pub mod bmc;
pub mod boot;
pub mod cli;
pub mod conductor;
pub mod config;
pub mod confined;
pub mod dhcp;
pub mod http_front;
pub mod log_limit;
pub mod metrics;
pub mod node;
pub mod plan;
pub mod power_sync;
pub mod profiles;
pub mod secrets;
pub mod server;
pub mod state;
pub mod store;
pub mod tftp;
