//! Host speed of the timing model: simulated packets per host second (the goal is at least
//! 1 million), for the NP4GS3 preset on the hand-off workload.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use knits_np_sim::machine::Machine;
use knits_np_sim::model::{Program, RunOptions};
use knits_np_sim::workload::{Scenario, Spec, generate};

fn bench(c: &mut Criterion) {
    let mut spec = Spec::scenario(Scenario::Handoff1);
    spec.connections = 500;
    let (traces, _) = generate(&spec).expect("workload");
    let mut g = c.benchmark_group("model");
    let n = 200_000;
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    for m in ["np4gs3", "ixp1200", "cpu"] {
        let p = Program::new(&Machine::preset(m).expect("preset"), &traces);
        g.bench_function(format!("{m}/handoff-1"), |b| {
            b.iter(|| p.run(n, &RunOptions::default()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
