//! The event loop's capture: every frame the core is given ("in") and sends ("out"), written to
//! one pcapng file with one interface per port. A single loop owns its writer; the shards of a
//! [`crate::shard_set::ShardSet`] share one behind a mutex.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use knits_core::config::PortId;

use crate::pcap::{self, Direction};

/// The pcapng writer of a capture.
pub(crate) type PcapWriter = pcap::Writer<BufWriter<File>>;

/// The capture: the loop's own writer, or one shared by the shards.
pub(crate) enum Capture {
    Own(PcapWriter),
    Shared(Arc<Mutex<PcapWriter>>),
}

impl Capture {
    /// Records `frame` (no virtio-net header) on `port`, stamped with the wall clock. A write
    /// that fails loses that frame only; the loop goes on.
    pub(crate) fn write(&mut self, port: PortId, dir: Direction, frame: &[u8]) {
        match self {
            Capture::Own(w) => {
                let _ = w.write(port as u32, now_us(), dir, frame);
            }
            Capture::Shared(m) => {
                if let Ok(mut w) = m.lock() {
                    let _ = w.write(port as u32, now_us(), dir, frame);
                }
            }
        }
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        match self {
            Capture::Own(w) => w.flush(),
            Capture::Shared(m) => match m.lock() {
                Ok(mut w) => w.flush(),
                Err(_) => Ok(()),
            },
        }
    }

    /// Frames written so far (by every shard, for a shared writer).
    pub(crate) fn frames(&self) -> u64 {
        match self {
            Capture::Own(w) => w.frames,
            Capture::Shared(m) => m.lock().map(|w| w.frames).unwrap_or(0),
        }
    }
}

/// Creates the capture file at `path`, one interface per port named as in `names`.
pub(crate) fn open(path: &Path, names: &[String]) -> io::Result<PcapWriter> {
    let f = File::create(path)
        .map_err(|e| io::Error::new(e.kind(), format!("pcap file {}: {e}", path.display())))?;
    pcap::Writer::new(BufWriter::with_capacity(1 << 20, f), names)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
