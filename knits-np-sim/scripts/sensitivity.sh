#!/usr/bin/env bash
# Sensitivity of the NP results to the numbers that have no source (docs/np-sim.md). Each row:
# a preset with one number changed, a workload, packets/s and the bottleneck. CSV to stdout.
#   cargo build --release -p knits-np-sim
#   knits-np-sim/scripts/sensitivity.sh > knits-np-sim/figures/sensitivity.csv
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release/knits-np-sim}
PACKETS=${PACKETS:-300000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
M=knits-np-sim/machines

# run NAME PRESET WORKLOAD-ARGS SED-EXPRESSION...
run() {
  local name=$1 base=$2 workload=$3
  shift 3
  cp "$M/$base.toml" "$tmp/m.toml"
  for e in "$@"; do sed -i -e "$e" "$tmp/m.toml"; done
  # shellcheck disable=SC2086
  "$BIN" run --machine "$tmp/m.toml" $workload --packets "$PACKETS" --json \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["sim"]; print("%.3f,%.0f,%s" % (r["pps"]/1e6, r["total"]["work"]["mean"], r["bottleneck"].split(":")[0].split(" (")[0]))' \
    | sed "s|^|$base,$name,${workload#--workload },|"
}

echo "machine,variant,workload,mpps,engine_cycles_per_packet,bottleneck"
IPF="--workload ip-forward"
H1M="--workload handoff-1 --min-frames --requests 1"
H1="--workload handoff-1"
SW='occupancy_per_item = 9.586'
# NP4GS3: the switch-interface configurations the sources allow (one or two DASL links, 8x8
# or 16x16 mode, 64- or 80-byte cells, the frame header), then the engine-side assumptions.
for w in "$IPF" "$H1M" "$H1"; do
  run "preset (two DASL links, 64-byte cells)" np4gs3 "$w"
  run "one DASL link (3.55 Gb/s)" np4gs3 "$w" "s/$SW/occupancy_per_item = 19.171/"
  run "one link in 16x16 mode (1.77 Gb/s)" np4gs3 "$w" "s/$SW/occupancy_per_item = 38.342/"
  run "one link, 80-byte cells" np4gs3 "$w" "s/cell_bytes = 61.0, cell_extra = 10.0, $SW/cell_bytes = 77.0, cell_extra = 10.0, occupancy_per_item = 23.964/"
  run "one link, frame header 0 bytes" np4gs3 "$w" "s/cell_extra = 10.0, $SW/cell_extra = 0.0, occupancy_per_item = 19.171/"
  run "cpi 1.5" np4gs3 "$w" 's/^cpi = 1.0/cpi = 1.5/'
  run "isa_expansion 0.5" np4gs3 "$w" 's/^isa_expansion = 1.0/isa_expansion = 0.5/'
  run "isa_expansion 1.5" np4gs3 "$w" 's/^isa_expansion = 1.0/isa_expansion = 1.5/'
  run "isa_expansion 2.0" np4gs3 "$w" 's/^isa_expansion = 1.0/isa_expansion = 2.0/'
  run "no offload (checksum, lookup in picocode)" np4gs3 "$w" 's/^offload = .*/offload = []/'
done
# The hardware path alone (picocode almost free: cpi 0.05), per switch-interface
# configuration: the bracket the sources allow for what the chip's data path carries.
for v in "preset (two DASL links, 64-byte cells)|" "one DASL link (3.55 Gb/s)|s/$SW/occupancy_per_item = 19.171/" \
  "one link in 16x16 mode (1.77 Gb/s)|s/$SW/occupancy_per_item = 38.342/" \
  "one link, 80-byte cells|s/cell_bytes = 61.0, cell_extra = 10.0, $SW/cell_bytes = 77.0, cell_extra = 10.0, occupancy_per_item = 23.964/" \
  "one link, frame header 0 bytes|s/cell_extra = 10.0, $SW/cell_extra = 0.0, occupancy_per_item = 19.171/"; do
  name=${v%%|*}
  expr=${v#*|}
  if [ -n "$expr" ]; then
    run "hardware path alone: $name" np4gs3 "$IPF" 's/^cpi = 1.0/cpi = 0.05/' "$expr"
  else
    run "hardware path alone: $name" np4gs3 "$IPF" 's/^cpi = 1.0/cpi = 0.05/'
  fi
done
# IXP1200 on plain forwarding: the input/output split, CPI, instruction-set expansion, clock.
run preset ixp1200 "$IPF"
run "no split (6 engines do both passes)" ixp1200 "$IPF" 's/^egress_engines = 2/egress_engines = 0/'
run "5 input + 1 output" ixp1200 "$IPF" 's/^egress_engines = 2/egress_engines = 1/'
run "3 input + 3 output" ixp1200 "$IPF" 's/^egress_engines = 2/egress_engines = 3/'
run "cpi 1.3" ixp1200 "$IPF" 's/^cpi = 1.0/cpi = 1.3/'
run "isa_expansion 0.5" ixp1200 "$IPF" 's/^isa_expansion = 1.0/isa_expansion = 0.5/'
run "isa_expansion 0.25" ixp1200 "$IPF" 's/^isa_expansion = 1.0/isa_expansion = 0.25/'
run "isa_expansion 1.5" ixp1200 "$IPF" 's/^isa_expansion = 1.0/isa_expansion = 1.5/'
run "switch_cycles 0" ixp1200 "$IPF" 's/^switch_cycles = 1.0/switch_cycles = 0.0/'
run "232 MHz" ixp1200 "$IPF" 's/^clock_mhz = 200.0/clock_mhz = 232.0/'
