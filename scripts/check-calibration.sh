#!/usr/bin/env bash
# CI: the checked-in calibration (knits-np-sim/calibration.toml: instructions per packet class
# and stage of knits-core's release build, and data-cache misses per packet class, counted by
# callgrind and its cache simulator) is not stale: every class's total and every stage within
# the file's tolerance (10 % of the class's instructions), every class's L1d and L2 misses
# within 10 % or half a miss a packet, whichever is larger.
# Regenerate with: cargo run --release -p knits-np-sim -- calibrate   (and commit the file).
# Needs valgrind. Takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "check-calibration: needs valgrind (apt-get install valgrind)"; exit 2; }
cargo run --release -q -p knits-np-sim -- calibrate --check
