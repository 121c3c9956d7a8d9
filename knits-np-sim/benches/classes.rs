//! Time per packet of every packet class through `Switch::process`, the frames that
//! `knits-np-sim calibrate` counts under callgrind (knits_testkit::classes).
//!
//! `cargo bench -p knits-np-sim --bench classes`; `knits-np-sim validate` puts the medians
//! beside the `cpu` preset's predictions (docs/np-sim.md, "Validation on this machine").
//! Each iteration copies the class's frame into a buffer and processes it, as knits-core's
//! pipeline benchmark does. Classes with one frame per instance (syn, handoff, fakefin) are
//! set up in chunks outside the timed loop; `ack-cold`'s 1M flows once.
//!
//! Two groups: `class` times with the wall clock (criterion's default); `class_oncpu` with the
//! thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`), which does not count the time other
//! processes on a shared machine hold the core (their cache pollution still counts).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, criterion_group, criterion_main};
use knits_core::meter::NoMeter;
use knits_core::switch::FrameMeta;

use knits_testkit::{classes, sink as frames};

/// Nanoseconds of CPU time of this thread.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Criterion measurement: thread CPU time in nanoseconds.
struct OnCpu;

impl Measurement for OnCpu {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, i: u64) -> u64 {
        thread_cpu_ns() - i
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        static WALL: WallTime = WallTime;
        WALL.formatter()
    }
}

/// A clock for a timed loop.
trait Clock {
    type Mark;
    type Value;
    fn mark() -> Self::Mark;
    fn since(m: Self::Mark) -> Self::Value;
    fn add(a: Self::Value, b: Self::Value) -> Self::Value;
    fn zero() -> Self::Value;
}

struct Wall;
impl Clock for Wall {
    type Mark = Instant;
    type Value = Duration;
    fn mark() -> Instant {
        Instant::now()
    }
    fn since(m: Instant) -> Duration {
        m.elapsed()
    }
    fn add(a: Duration, b: Duration) -> Duration {
        a + b
    }
    fn zero() -> Duration {
        Duration::ZERO
    }
}

struct Cpu;
impl Clock for Cpu {
    type Mark = u64;
    type Value = u64;
    fn mark() -> u64 {
        thread_cpu_ns()
    }
    fn since(m: u64) -> u64 {
        thread_cpu_ns() - m
    }
    fn add(a: u64, b: u64) -> u64 {
        a + b
    }
    fn zero() -> u64 {
        0
    }
}

fn chunk(class: &str) -> u64 {
    match class {
        "syn" => 50_000,
        "handoff" | "fakefin" => classes::HANDOFFS as u64,
        _ => 1 << 40,
    }
}

/// Times `iters` frames of `class`; `cold` keeps `ack-cold`'s run between calls.
fn timed<C: Clock>(class: &str, iters: u64, cold: &mut Option<classes::Run>) -> C::Value {
    let mut total = C::zero();
    let mut left = iters;
    while left > 0 {
        let n = left.min(chunk(class));
        left -= n;
        let mut fresh = None;
        let run = if class == "ack-cold" {
            cold.get_or_insert_with(|| classes::setup(class, 65_536).expect("class set-up"))
        } else {
            fresh.insert(classes::setup(class, n as usize).expect("class set-up"))
        };
        let mut buf = vec![0u8; run.max_len()];
        let t = C::mark();
        for i in 0..n as usize {
            let (port, f) = run.frame(i);
            let frame = &mut buf[..f.len()];
            frame.copy_from_slice(f);
            black_box(run.sw.process(
                port,
                run.now,
                black_box(frame),
                FrameMeta::FULL,
                &mut frames::Discard,
                &mut NoMeter,
            ));
        }
        total = C::add(total, C::since(t));
    }
    total
}

fn wall(c: &mut Criterion) {
    let mut g = c.benchmark_group("class");
    let mut cold = None;
    for class in classes::CLASSES {
        g.bench_function(class, |b| {
            b.iter_custom(|iters| timed::<Wall>(class, iters, &mut cold))
        });
    }
    g.finish();
}

fn oncpu(c: &mut Criterion<OnCpu>) {
    let mut g = c.benchmark_group("class_oncpu");
    let mut cold = None;
    for class in classes::CLASSES {
        g.bench_function(class, |b| {
            b.iter_custom(|iters| timed::<Cpu>(class, iters, &mut cold))
        });
    }
    g.finish();
}

criterion_group!(wall_clock, wall);
criterion_group! {
    name = cpu_clock;
    config = Criterion::default().with_measurement(OnCpu);
    targets = oncpu
}
criterion_main!(wall_clock, cpu_clock);
