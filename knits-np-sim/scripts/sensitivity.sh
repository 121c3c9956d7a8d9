#!/usr/bin/env bash
# Sensitivity of the forwarding validation to the parameters that have no source
# (docs/np-sim.md, "Validation"). Each row: a preset with one number changed, the workload,
# packets/s and the bottleneck. Writes CSV to stdout.
#   CARGO_TARGET_DIR=target-sim cargo build --release -p knits-np-sim
#   knits-np-sim/scripts/sensitivity.sh > knits-np-sim/figures/sensitivity.csv
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target-sim}/release/knits-np-sim}
PACKETS=${PACKETS:-1000000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
M=knits-np-sim/machines

# variant NAME MACHINE-TOML SED-EXPRESSION...
run() {
  local name=$1 base=$2 workload=$3
  shift 3
  cp "$M/$base.toml" "$tmp/m.toml"
  for e in "$@"; do sed -i -e "$e" "$tmp/m.toml"; done
  # shellcheck disable=SC2086
  "$BIN" run --machine "$tmp/m.toml" $workload --packets "$PACKETS" --json \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["sim"]; print("%.3f,%s" % (r["pps"]/1e6, r["bottleneck"].split(":")[0].split(" (")[0]))' \
    | sed "s|^|$base,$name,${workload#--workload },|"
}

echo "machine,variant,workload,mpps,bottleneck"
FWD="--workload forward --min-frames"
H1="--workload handoff-1"
# NP4GS3: switch interface (19.171 cycles a 64-byte cell = one 3.55 Gb/s PRS28.4G port), cell
# size, media, picocode per pass.
for w in "$FWD" "$H1"; do
  run preset np4gs3 "$w"
  run "16x16 port (1.77 Gb/s)" np4gs3 "$w" 's/occupancy_per_item = 19.171/occupancy_per_item = 38.342/'
  run "two DASL links (7.1 Gb/s)" np4gs3 "$w" 's/occupancy_per_item = 19.171/occupancy_per_item = 9.586/'
  run "80-byte cells" np4gs3 "$w" 's/cell_bytes = 61.0, cell_extra = 10.0, occupancy_per_item = 19.171/cell_bytes = 77.0, cell_extra = 10.0, occupancy_per_item = 23.964/'
  run "frame header 0 bytes" np4gs3 "$w" 's/cell_bytes = 61.0, cell_extra = 10.0/cell_bytes = 61.0, cell_extra = 0.0/'
  run "frame header 2 bytes" np4gs3 "$w" 's/cell_bytes = 61.0, cell_extra = 10.0/cell_bytes = 61.0, cell_extra = 2.0/'
  run "no switch cost" np4gs3 "$w" 's/occupancy_per_item = 19.171/occupancy_per_item = 0.0/'
  run "no switch and no media cost" np4gs3 "$w" 's/occupancy_per_item = 19.171/occupancy_per_item = 0.0/' \
    's/occupancy_per_item = 0.266/occupancy_per_item = 0.0/' 's/^latency = 6.384/latency = 0.0/' \
    's/^occupancy = 6.384/occupancy = 0.0/'
  run "media 8 Gb/s" np4gs3 "$w" 's/occupancy_per_item = 0.266/occupancy_per_item = 0.133/' 's/^latency = 6.384/latency = 3.192/' 's/^occupancy = 6.384/occupancy = 3.192/'
  run "+50 picocode cycles per pass" np4gs3 "$w" 's/pass_start = \[ { cycles = 2.0/pass_start = [ { cycles = 52.0/'
  run "+100 picocode cycles per pass" np4gs3 "$w" 's/pass_start = \[ { cycles = 2.0/pass_start = [ { cycles = 102.0/'
  run "+200 picocode cycles per pass" np4gs3 "$w" 's/pass_start = \[ { cycles = 2.0/pass_start = [ { cycles = 202.0/'
  run "two DASL links and +100 picocode cycles per pass" np4gs3 "$w" 's/occupancy_per_item = 19.171/occupancy_per_item = 9.586/' \
    's/pass_start = \[ { cycles = 2.0/pass_start = [ { cycles = 102.0/'
done
# IXP1200: the input/output split, thread switch, per-byte parse cost, clock.
run preset ixp1200 "$FWD"
run "no split (6 engines do both passes)" ixp1200 "$FWD" 's/^egress_engines = 2/egress_engines = 0/'
run "5 input + 1 output" ixp1200 "$FWD" 's/^egress_engines = 2/egress_engines = 1/'
run "3 input + 3 output" ixp1200 "$FWD" 's/^egress_engines = 2/egress_engines = 3/'
run "switch_cycles 0" ixp1200 "$FWD" 's/^switch_cycles = 1.0/switch_cycles = 0.0/'
run "bytes_read 0.5 cycle/byte" ixp1200 "$FWD" 's/^bytes_read      = { cycles_per_item = 1.0 }/bytes_read      = { cycles_per_item = 0.5 }/'
run "bytes_read 1.5 cycles/byte" ixp1200 "$FWD" 's/^bytes_read      = { cycles_per_item = 1.0 }/bytes_read      = { cycles_per_item = 1.5 }/'
run "frame-work cycles x1.5" ixp1200 "$FWD" 's/{ cycles = 12.0,/{ cycles = 18.0,/g' 's/{ cycles = 6.0,/{ cycles = 9.0,/g' 's/{ cycles = 4.0, units = \["sram"\], wait/{ cycles = 6.0, units = ["sram"], wait/'
run "232 MHz" ixp1200 "$FWD" 's/^clock_mhz = 200.0/clock_mhz = 232.0/'
run "SRAM/SDRAM latency x2" ixp1200 "$FWD" '/\[units.sram\]/,/occupancy/s/^latency = 20.0/latency = 40.0/' '/\[units.sdram\]/,/occupancy/s/^latency = 40.0/latency = 80.0/'
