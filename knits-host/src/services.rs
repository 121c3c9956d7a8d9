//! The services a cluster runs in its node namespaces, as the subcommands of the executables
//! that start them (`knits-host exec-proxy` / `exec-origin`, and knits-bench's): one place for
//! both.

use std::time::Duration;

fn tokio_rt(threads: Option<usize>) -> Result<tokio::runtime::Runtime, String> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    b.enable_all().worker_threads(threads.unwrap_or(1).max(1));
    b.build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

async fn shutdown_signal() {
    if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    } else {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs knits-proxy until SIGINT or SIGTERM (`knits-host exec-proxy`: one executable serves
/// the whole cluster, and knits-bench starts its proxies the same way).
pub fn exec_proxy(
    args: knits_proxy::config::RunArgs,
    threads: Option<usize>,
) -> Result<(), String> {
    let cfg = args.load().map_err(|e| e.to_string())?;
    tokio_rt(threads)?.block_on(async move {
        let proxy = knits_proxy::Proxy::bind(cfg)
            .await
            .map_err(|e| format!("proxy: {e}"))?;
        tokio::select! {
            _ = proxy.run() => {}
            _ = shutdown_signal() => {}
        }
        Ok(())
    })
}

/// Runs the deterministic origin until SIGINT or SIGTERM (`knits-host exec-origin`).
pub fn exec_origin(
    args: knits_proxy::origin::OriginArgs,
    threads: Option<usize>,
) -> Result<(), String> {
    tokio_rt(threads)?.block_on(async move {
        let origin = knits_proxy::Origin::bind(args.listen, args.node_id.clone())
            .await
            .map_err(|e| format!("origin on {}: {e}", args.listen))?
            .with_idle(Duration::from_millis(args.idle_ms.max(1)));
        tokio::select! {
            _ = origin.run() => {}
            _ = shutdown_signal() => {}
        }
        Ok(())
    })
}
