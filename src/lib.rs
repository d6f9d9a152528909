//! racklift: a bare-metal provisioning server.
//!
//! The library holds every part; the `racklift` binary (server and CLI) and the
//! `racklift-agent` binary (the ramdisk's program) are thin shells around it.
//! See `docs/ARCHITECTURE.md` for the code map and the invariants.
//!
//! The agent needs [`agent`] and [`protocol`] only: everything else is the
//! server, behind the `server` feature (on by default). The ramdisk's agent
//! is built with `--no-default-features`, compiling none of the server's
//! dependencies.

pub mod agent;
pub mod protocol;

#[cfg(feature = "server")]
pub mod api;
#[cfg(feature = "server")]
pub mod app;
#[cfg(feature = "server")]
pub mod bmc;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod conductor;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod confined;
#[cfg(feature = "server")]
pub mod log_limit;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod netboot;
#[cfg(feature = "server")]
pub mod node;
#[cfg(feature = "server")]
pub mod plan;
#[cfg(feature = "server")]
pub mod power_sync;
#[cfg(feature = "server")]
pub mod profiles;
#[cfg(feature = "server")]
pub mod secrets;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod state;
#[cfg(feature = "server")]
pub mod store;
