//! Time per packet of every packet class through `Switch::process`, the frames that
//! `knits-np-sim calibrate` counts under callgrind (knits-core/benches/common/classes.rs).
//!
//! `cargo bench -p knits-np-sim --bench classes`; `knits-np-sim validate` puts the medians
//! beside the `cpu` preset's predictions (docs/np-sim.md, "Validation on this machine").
//! Each iteration copies the class's frame into a buffer and processes it, as knits-core's
//! pipeline benchmark does. Classes with one frame per instance (syn, handoff, fakefin) are
//! set up in chunks outside the timed loop.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use knits_core::meter::NoMeter;
use knits_core::switch::FrameMeta;

#[path = "../../knits-core/benches/common/frames.rs"]
mod frames;

#[path = "../../knits-core/benches/common/classes.rs"]
mod classes;

fn chunk(class: &str) -> u64 {
    match class {
        "syn" => 50_000,
        "handoff" | "fakefin" => classes::HANDOFFS as u64,
        _ => 1 << 40,
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("class");
    for class in classes::CLASSES {
        g.bench_function(class, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(chunk(class));
                    left -= n;
                    let mut run = classes::setup(class, n as usize).expect("class set-up");
                    let mut buf = vec![0u8; run.max_len()];
                    let t = Instant::now();
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
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
