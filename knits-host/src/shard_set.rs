//! N shards, each an event loop ([`crate::runtime`]) on a thread of its own with its own core
//! (flow table, sessions, counters, timers), over its own queue of every port's multi-queue TAP.
//!
//! [`crate::shard`] links them; capture is one writer behind a mutex; the published snapshot is
//! the sum of the shards', with each shard's own figures beside it ([`Snapshot::shards`]).

use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use knits_core::config::Config;

use crate::capture::{self, Capture};
use crate::datapath::Core;
use crate::runtime::{Options, Runtime};
use crate::shard::{MAX_SHARDS, ShardCtx, ShardStats};
use crate::stats::Snapshot;
use crate::tap::Tap;

/// N shards, each a loop on its own thread (module docs).
pub struct ShardSet {
    threads: Vec<std::thread::JoinHandle<io::Result<()>>>,
    stats: Arc<Vec<ShardStats>>,
}

impl std::fmt::Debug for ShardSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardSet")
            .field("shards", &self.threads.len())
            .finish()
    }
}

impl ShardSet {
    /// Starts one loop per core: `queues[k]` are shard k's queues of every port (port id =
    /// index), `config` is the switch configuration the steering follows. Runs until `stop`.
    pub fn start<C: Core + Send + 'static>(
        cores: Vec<C>,
        queues: Vec<Vec<Tap>>,
        config: Config,
        opts: &Options,
        snapshot: Arc<Mutex<Snapshot>>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<ShardSet> {
        let n = cores.len();
        if n == 0 || n > MAX_SHARDS || queues.len() != n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("shards must be 1..={MAX_SHARDS}, with one queue set each"),
            ));
        }
        let (ctxs, stats) = ShardCtx::mesh(n, queues[0].len(), config)?;
        let pcap = match &opts.pcap {
            Some(path) => {
                let names: Vec<String> = queues[0].iter().map(|t| t.name().to_string()).collect();
                Some(Arc::new(Mutex::new(capture::open(path, &names)?)))
            }
            None => None,
        };
        let start = std::time::Instant::now();
        let mut runtimes = Vec::new();
        for ((core, taps), ctx) in cores.into_iter().zip(queues).zip(ctxs) {
            runtimes.push(Runtime::build(
                core,
                taps,
                opts,
                snapshot.clone(),
                pcap.clone().map(Capture::Shared),
                Some(ctx),
                start,
            )?);
        }
        let mut threads = Vec::new();
        for (id, mut rt) in runtimes.into_iter().enumerate() {
            let stop = stop.clone();
            let t = std::thread::Builder::new()
                .name(format!("knits-shard{id}"))
                .spawn(move || rt.run(&stop))?;
            threads.push(t);
        }
        Ok(ShardSet { threads, stats })
    }

    /// Every shard's figures.
    pub fn stats(&self) -> Arc<Vec<ShardStats>> {
        self.stats.clone()
    }

    /// Waits for every shard to stop (after `stop` was set); the first error wins.
    pub fn join(self) -> io::Result<()> {
        let mut r = Ok(());
        for t in self.threads {
            let e = match t.join() {
                Ok(x) => x,
                Err(_) => Err(io::Error::other("a shard thread panicked")),
            };
            if r.is_ok() {
                r = e;
            }
        }
        r
    }
}
