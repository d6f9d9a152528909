//! The `racklift` binary: `racklift serve` runs the server; every other command
//! is a client of its API. The only place that reads flags and the environment.

use clap::Parser;
use racklift::cli::{Cli, Command, run_client};
use racklift::config::Config;
use std::process::ExitCode;

fn init_tracing(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&cfg.log.level);
    use std::io::IsTerminal;
    // Colours only for a person at a terminal, never in a file or a journal.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if cfg.log.json {
        b.json().init();
    } else {
        b.init();
    }
}

async fn serve(config: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let cfg = Config::load(config.as_deref(), std::env::vars())?;
    init_tracing(&cfg);
    let listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (http.listen): {e}", cfg.http.listen))?;
    let running = racklift::server::start(cfg, listener).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("racklift: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Serve { config } => serve(config).await,
            other => run_client(other).await.map(|out| println!("{out}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("racklift: {e:#}");
            ExitCode::FAILURE
        }
    }
}
