#!/usr/bin/env bash
# Instructions per packet of knits-core's `Switch::process`, per packet class and per stage,
# counted with callgrind (deterministic: the same binary and input give the same count on any
# load). Prints a markdown table; docs/performance.md and docs/np-sim.md quote it. Needs valgrind.
#   scripts/instructions.sh [N]      (N packets per class, default 20000; hand-offs at most 1000)
# The classes are knits_testkit::classes (knits-testkit/src/classes.rs); the stages are source files, grouped by
# the table in knits-np-sim/src/calibration.rs (STAGE_FILES). The same counts, written to
# knits-np-sim/calibration.toml, are what the simulator charges: `knits-np-sim calibrate`.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-20000}"
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)"; exit 2; }
cargo run --release -q -p knits-np-sim -- calibrate --table --packets "$n"
