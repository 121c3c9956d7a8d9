//! `knits-proxy`: the KNITS back-end proxy (`run`) and the deterministic origin (`origin`).

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use knits_proxy::config::RunArgs;
use knits_proxy::origin::OriginArgs;
use knits_proxy::{Origin, Proxy};

#[derive(Parser)]
#[command(
    name = "knits-proxy",
    version,
    about = "KNITS back-end proxy and deterministic origin server"
)]
struct Cli {
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info")]
    log_level: tracing::Level,
    /// Worker threads (default: one per CPU).
    #[arg(long, global = true, value_name = "N")]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy: serve locally or hand connections off through the switch.
    Run(RunArgs),
    /// Validate a configuration (file and flags) and print it.
    Check(RunArgs),
    /// Run the deterministic origin web server (GET /obj/<name>?size=N).
    Origin(OriginArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go to stderr, coloured only on a terminal.
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = cli.threads {
        rt.worker_threads(n.max(1));
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("knits-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.cmd)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("knits-proxy: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(cmd: Cmd) -> Result<(), Box<dyn std::error::Error>> {
    match cmd {
        Cmd::Check(args) => {
            let cfg = args.load()?;
            println!("{cfg:#?}");
            Ok(())
        }
        Cmd::Run(args) => {
            let cfg = args.load()?;
            let proxy = Proxy::bind(cfg.clone()).await?;
            tracing::info!(
                node = %cfg.node_id,
                listen = %proxy.local_addr()?,
                upstream = %cfg.upstream,
                peers = cfg.peers.len(),
                policy = ?cfg.policy,
                switch = ?cfg.switch.as_ref().map(|s| s.control),
                c2_pool = cfg.c2_pool,
                "knits-proxy running"
            );
            tokio::select! {
                _ = proxy.run() => Ok(()),
                r = shutdown_signal() => r,
            }
        }
        Cmd::Origin(args) => {
            let origin = Origin::bind(args.listen, args.node_id.clone())
                .await?
                .with_idle(std::time::Duration::from_millis(args.idle_ms.max(1)));
            tracing::info!(
                listen = %origin.local_addr()?,
                node = args.node_id.as_deref().unwrap_or("-"),
                "origin running"
            );
            tokio::select! {
                _ = origin.run() => Ok(()),
                r = shutdown_signal() => r,
            }
        }
    }
}

async fn shutdown_signal() -> Result<(), Box<dyn std::error::Error>> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    Ok(())
}
