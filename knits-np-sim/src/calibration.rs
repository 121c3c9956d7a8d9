//! Calibration: the instructions each packet class takes in each stage of the release-built
//! core, counted by callgrind, and the file that holds them (`knits-np-sim/calibration.toml`).
//!
//! `knits-np-sim calibrate` builds `knits-core/examples/per_packet.rs` in release (with
//! `debug = 1`, so line tables survive inlining), runs each class of
//! `knits_testkit::classes` (knits-testkit/src/classes.rs) under `valgrind --tool=callgrind --toggle-collect`
//! (only the measured `Switch::process` calls are counted), reads the callgrind output and
//! groups the instructions by the source file callgrind attributes each one to: a stage is a
//! set of source files ([`STAGE_FILES`]). Code from outside knits-core (std, smoltcp,
//! heapless, siphasher) inlined into a knits-core function goes to the stage of that function
//! when its name names a stage file, else to `glue`. A knits-core file the table does not
//! know goes to `other` and is listed, so a new file shows up instead of vanishing.
//!
//! The model charges each stage these instructions times the machine's cycles per instruction
//! (and, for a network processor, an instruction-set expansion factor): see [`crate::model`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::trace::{Outcome, TraceMeter, TraceSet};

/// Source file (relative to `knits-core/src/`) -> stage. The one place to change when the
/// core's files move. Files of issue 14's stage layout and today's files are both listed.
pub const STAGE_FILES: &[(&str, &str)] = &[
    ("switch/parse.rs", "parse"),
    ("wire/tcp_options.rs", "parse"),
    ("wire/field.rs", "parse"),
    ("wire/mod.rs", "parse"),
    ("checksum.rs", "checksum"),
    ("switch/classify.rs", "classify"),
    ("table.rs", "lookup"),
    ("switch/track.rs", "track"),
    ("splice.rs", "splice"),
    ("switch/handoff.rs", "splice"),
    ("switch/session.rs", "splice"),
    ("switch/rewrite.rs", "rewrite"),
    ("switch/neighbors.rs", "neighbors"),
    ("switch/control.rs", "control"),
    ("switch/accept.rs", "control"),
    ("wire/control.rs", "control"),
    ("switch/mod.rs", "pipeline"),
    ("counters.rs", "pipeline"),
    ("config.rs", "classify"),
    ("spray.rs", "classify"),
    ("seq.rs", "track"),
];

/// Every stage, in pipeline order; `glue` is code from outside knits-core that no stage's
/// function inlined, `other` a knits-core file that [`STAGE_FILES`] does not list.
pub const STAGES: [&str; 12] = [
    "parse",
    "checksum",
    "classify",
    "lookup",
    "track",
    "splice",
    "rewrite",
    "neighbors",
    "control",
    "pipeline",
    "glue",
    "other",
];

/// The knits-core meter step a stage's instructions are charged in (which decides the pass
/// on a two-pass machine): parse and checksum in `parse`, track, splice and control in
/// `decide`, rewrite and neighbors in `rewrite`, pipeline, glue and other in `verdict`.
pub fn step_of_stage(stage: &str) -> usize {
    match stage {
        "parse" | "checksum" => 0,
        "classify" => 1,
        "lookup" => 2,
        "track" | "splice" | "control" => 3,
        "rewrite" | "neighbors" => 4,
        _ => 5,
    }
}

/// The packet classes (the same list as `knits_testkit::classes`).
pub use crate::classes::CLASSES;

/// One class's instructions per packet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassCost {
    /// What the class is.
    pub description: String,
    /// Frames counted.
    pub packets: u64,
    /// Instructions per packet of the measured `Switch::process` calls, all stages.
    pub instructions: f64,
    /// Instructions per packet by stage (stages with none are left out).
    pub stages: BTreeMap<String, f64>,
    /// knits-core files that no stage lists (their instructions are under `other`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown_files: Vec<String>,
    /// Data-cache misses per packet that hit the L2 (callgrind's cache simulator, geometry in
    /// [`Calibration::cache`]): loads and stores the meter does not see.
    #[serde(default)]
    pub l1_misses: f64,
    /// Data-cache misses per packet that also miss the L2.
    #[serde(default)]
    pub l2_misses: f64,
}

/// The calibration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// How to make it again.
    pub command: String,
    /// The commit the core was built from (`-dirty` when the tree had changes).
    pub commit: String,
    /// `rustc -V`.
    pub rustc: String,
    /// Packets per class asked for (see each class's `packets`).
    pub packets: u64,
    /// Largest change, as a share of a class's instructions, that the CI check accepts
    /// between this file and a fresh count (per class total and per stage).
    pub tolerance: f64,
    /// The caches callgrind simulated for the miss counts: callgrind's `--D1` and `--LL`
    /// (size, ways, line bytes), this machine's L1d and L2 as sysfs describes them.
    #[serde(default)]
    pub cache: String,
    /// Per class.
    pub classes: BTreeMap<String, ClassCost>,
}

/// The checked-in calibration.
pub const CHECKED_IN: &str = include_str!("../calibration.toml");

/// Where the checked-in calibration lives.
pub fn default_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("calibration.toml")
}

impl Calibration {
    /// Parses a calibration file.
    pub fn from_toml(text: &str) -> Result<Calibration, String> {
        let c: Calibration = toml::from_str(text).map_err(|e| e.to_string())?;
        for (name, k) in &c.classes {
            if !(k.instructions.is_finite() && k.instructions > 0.0) {
                return Err(format!(
                    "classes.{name}.instructions = {} must be positive",
                    k.instructions
                ));
            }
            for s in k.stages.keys() {
                if !STAGES.contains(&s.as_str()) {
                    return Err(format!(
                        "classes.{name}.stages.{s}: not a stage; stages are {}",
                        STAGES.join(", ")
                    ));
                }
            }
        }
        if !(c.tolerance > 0.0 && c.tolerance < 1.0) {
            return Err(format!("tolerance = {} must be in (0, 1)", c.tolerance));
        }
        Ok(c)
    }

    /// The checked-in calibration.
    pub fn checked_in() -> Calibration {
        // A test keeps the file parseable; a broken file is a build-time mistake.
        Calibration::from_toml(CHECKED_IN).expect("knits-np-sim/calibration.toml parses")
    }

    /// The file's text.
    pub fn to_toml(&self) -> String {
        let head = "# Instructions per packet of knits-core's Switch::process, per packet class and stage,\n\
                    # counted by callgrind in the release build. Made by `knits-np-sim calibrate`;\n\
                    # checked by scripts/check-calibration.sh. docs/np-sim.md, \"Calibration\".\n";
        format!(
            "{head}{}",
            toml::to_string(self).unwrap_or_else(|e| format!("# cannot serialise: {e}\n"))
        )
    }

    /// A class's instructions by stage, in [`STAGES`] order.
    pub fn stages_of(&self, class: &str) -> Option<[f64; STAGES.len()]> {
        let k = self.classes.get(class)?;
        let mut v = [0.0; STAGES.len()];
        for (i, s) in STAGES.iter().enumerate() {
            v[i] = k.stages.get(*s).copied().unwrap_or(0.0);
        }
        Some(v)
    }

    /// A markdown table: classes by stages.
    pub fn table(&self) -> String {
        let used: Vec<&str> = STAGES
            .iter()
            .copied()
            .filter(|s| self.classes.values().any(|k| k.stages.contains_key(*s)))
            .collect();
        let mut t = format!(
            "| class | total | {} | L1d misses | L2 misses |\n",
            used.join(" | ")
        );
        t += &format!("|---|---:|{}---:|---:|\n", "---:|".repeat(used.len()));
        for class in CLASSES {
            let Some(k) = self.classes.get(class) else {
                continue;
            };
            let cells: Vec<String> = used
                .iter()
                .map(|s| {
                    k.stages
                        .get(*s)
                        .map(|v| format!("{v:.0}"))
                        .unwrap_or_default()
                })
                .collect();
            t += &format!(
                "| {class} | {:.0} | {} | {:.2} | {:.2} |\n",
                k.instructions,
                cells.join(" | "),
                k.l1_misses,
                k.l2_misses
            );
        }
        t
    }
}

/// What has moved between `old` (checked in) and `new` (just counted) by more than `old`'s
/// tolerance: per class, the total and every stage, as a share of the old total. Empty when
/// the checked-in file is current.
pub fn stale(old: &Calibration, new: &Calibration) -> Vec<String> {
    let tol = old.tolerance;
    let mut out = Vec::new();
    for (name, o) in &old.classes {
        let Some(n) = new.classes.get(name) else {
            out.push(format!("class {name}: no longer counted"));
            continue;
        };
        let rel = |a: f64, b: f64| (b - a).abs() / o.instructions;
        if rel(o.instructions, n.instructions) > tol {
            out.push(format!(
                "class {name}: {:.0} instructions per packet, the file says {:.0} ({:+.0} %, tolerance {:.0} %)",
                n.instructions,
                o.instructions,
                (n.instructions / o.instructions - 1.0) * 100.0,
                tol * 100.0
            ));
        }
        // Misses: the same share, but never less than half a miss a packet (a class with
        // almost none must not fail on a stray one).
        for (what, a, b) in [
            ("L1d misses", o.l1_misses, n.l1_misses),
            ("L2 misses", o.l2_misses, n.l2_misses),
        ] {
            if (b - a).abs() > (tol * a).max(0.5) {
                out.push(format!(
                    "class {name}: {b:.2} {what} per packet, the file says {a:.2} (tolerance {:.0} % or 0.5)",
                    tol * 100.0
                ));
            }
        }
        for s in STAGES {
            let (a, b) = (
                o.stages.get(s).copied().unwrap_or(0.0),
                n.stages.get(s).copied().unwrap_or(0.0),
            );
            if rel(a, b) > tol {
                out.push(format!(
                    "class {name}, stage {s}: {b:.0} instructions, the file says {a:.0} (a move of {:.0} % of the class)",
                    rel(a, b) * 100.0
                ));
            }
        }
    }
    for name in new.classes.keys() {
        if !old.classes.contains_key(name) {
            out.push(format!("class {name}: counted but not in the file"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Callgrind output.

/// Exclusive instructions (event `Ir`) per (source file, function) of a callgrind output file.
/// Reads the format of valgrind's docs ("Callgrind Format Specification"): name compression
/// `(id) name`, `fl=`/`fi=`/`fe=` file changes (inlined code carries its own file), `fn=`, and
/// `calls=` lines whose following cost line is the call's inclusive cost (skipped here).
pub fn parse_callgrind(text: &str) -> Result<BTreeMap<(String, String), u64>, String> {
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut fns: BTreeMap<String, String> = BTreeMap::new();
    let mut positions = 1usize;
    let mut ir_index: Option<usize> = None;
    let (mut fl, mut file, mut func) = (String::new(), String::new(), String::new());
    let mut skip_next = false;
    let mut out: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut total: u64 = 0;
    let mut summary: Option<u64> = None;
    // Resolves `(id) name` / `(id)` / `name` against a compression table.
    fn name(table: &mut BTreeMap<String, String>, v: &str) -> String {
        let v = v.trim();
        if let Some(rest) = v.strip_prefix('(')
            && let Some((id, tail)) = rest.split_once(')')
        {
            let tail = tail.trim();
            if tail.is_empty() {
                return table.get(id).cloned().unwrap_or_default();
            }
            table.insert(id.to_string(), tail.to_string());
            return tail.to_string();
        }
        v.to_string()
    }
    for (no, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.as_bytes()[0];
        if first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'*') {
            if skip_next {
                skip_next = false;
                continue;
            }
            let toks: Vec<&str> = line.split_whitespace().collect();
            let Some(ir) = ir_index else {
                return Err(format!("line {}: cost before the events: line", no + 1));
            };
            let v = match toks.get(positions + ir) {
                Some(t) => t
                    .parse::<u64>()
                    .map_err(|_| format!("line {}: bad cost {t:?}", no + 1))?,
                None => 0,
            };
            *out.entry((file.clone(), func.clone())).or_default() += v;
            total += v;
            continue;
        }
        let Some((key, val)) = line.split_once('=').or_else(|| line.split_once(':')) else {
            continue;
        };
        match key.trim() {
            "positions" => positions = val.split_whitespace().count().max(1),
            "events" => {
                ir_index = val.split_whitespace().position(|e| e == "Ir");
                if ir_index.is_none() {
                    return Err("events: no Ir (instructions) event".into());
                }
            }
            "summary" | "totals" => {
                if let Some(v) = val.split_whitespace().next().and_then(|v| v.parse().ok()) {
                    summary = Some(v);
                }
            }
            "fl" => {
                fl = name(&mut files, val);
                file = fl.clone();
            }
            "fi" | "fe" => file = name(&mut files, val),
            "fn" => {
                func = name(&mut fns, val);
                file = fl.clone();
            }
            "cfi" | "cfl" => {
                name(&mut files, val);
            }
            "cfn" => {
                name(&mut fns, val);
            }
            "calls" => skip_next = true,
            _ => {}
        }
    }
    if let Some(s) = summary
        && s != total
    {
        return Err(format!(
            "the cost lines add up to {total} instructions, the file's summary says {s}"
        ));
    }
    Ok(out)
}

/// The path of a file relative to `knits-core/src/`, if it is one of the core's.
fn core_file(path: &str) -> Option<&str> {
    path.split_once("knits-core/src/").map(|(_, f)| f)
}

/// The stage file a knits-core function's name names: its module path
/// (`knits_core::switch::handoff::<impl ...>::f` -> `switch/handoff.rs`).
fn file_of_function(func: &str) -> Option<&'static str> {
    let f = func.trim_start_matches('<');
    let mut segs = f.split("::");
    if segs.next()? != "knits_core" {
        return None;
    }
    let mods: Vec<&str> = segs
        .take_while(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
        .collect();
    for k in (1..=mods.len()).rev() {
        let p = mods[..k].join("/");
        for cand in [format!("{p}.rs"), format!("{p}/mod.rs")] {
            if let Some((file, _)) = STAGE_FILES.iter().find(|(f, _)| *f == cand) {
                return Some(file);
            }
        }
    }
    None
}

/// The stage of an instruction from `file` inside `func`: `None` for the measuring harness
/// (the example's own code and the test sink), which is not counted.
pub fn stage_of(file: &str, func: &str) -> Option<&'static str> {
    if file.contains("/examples/") || file.contains("knits-testkit/") {
        return None;
    }
    if let Some(f) = core_file(file) {
        return Some(
            STAGE_FILES
                .iter()
                .find(|(sf, _)| *sf == f)
                .map(|(_, s)| *s)
                .unwrap_or("other"),
        );
    }
    if func.starts_with("per_packet::") || func.contains("sink::Discard") {
        return None;
    }
    let stage = file_of_function(func)
        .and_then(|f| STAGE_FILES.iter().find(|(sf, _)| *sf == f))
        .map(|(_, s)| *s);
    Some(stage.unwrap_or("glue"))
}

/// A class's cost from the callgrind counts of `n` measured frames.
pub fn class_cost(
    class: &str,
    counts: &BTreeMap<(String, String), u64>,
    n: u64,
) -> Result<ClassCost, String> {
    let mut stages: BTreeMap<String, u64> = BTreeMap::new();
    let mut unknown = std::collections::BTreeSet::new();
    for ((file, func), ir) in counts {
        let Some(s) = stage_of(file, func) else {
            continue;
        };
        if s == "other"
            && let Some(f) = core_file(file)
        {
            unknown.insert(f.to_string());
        }
        *stages.entry(s.to_string()).or_default() += ir;
    }
    let total: u64 = stages.values().sum();
    if total == 0 {
        return Err(format!(
            "{class}: callgrind counted no instruction of knits-core (was --toggle-collect's \
             function renamed?)"
        ));
    }
    let per = |v: u64| (v as f64 / n as f64 * 10.0).round() / 10.0;
    Ok(ClassCost {
        description: crate::classes::describe(class).to_string(),
        packets: n,
        instructions: per(total),
        stages: stages
            .into_iter()
            .filter(|(_, v)| per(*v) > 0.0)
            .map(|(s, v)| (s, per(v)))
            .collect(),
        unknown_files: unknown.into_iter().collect(),
        l1_misses: 0.0,
        l2_misses: 0.0,
    })
}

/// Data-cache misses of a callgrind output made with `--cache-sim=yes`, from its `summary:`
/// (or `totals:`) line: (misses that hit the last level, misses of the last level), reads and
/// writes together. `None` when the file has no cache events.
pub fn cache_misses(text: &str) -> Option<(u64, u64)> {
    let mut events: Vec<&str> = Vec::new();
    let mut totals: Option<Vec<u64>> = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("events:") {
            events = v.split_whitespace().collect();
        } else if let Some(v) = line
            .strip_prefix("summary:")
            .or_else(|| line.strip_prefix("totals:"))
        {
            totals = Some(
                v.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect(),
            );
        }
    }
    let totals = totals?;
    // Callgrind leaves out trailing zero columns.
    let get = |e: &str| {
        let i = events.iter().position(|x| *x == e)?;
        Some(totals.get(i).copied().unwrap_or(0))
    };
    let d1 = get("D1mr")? + get("D1mw")?;
    let ll = get("DLmr")? + get("DLmw")?;
    Some((d1.saturating_sub(ll), ll))
}

/// One data or unified cache level of cpu0 from sysfs: (size, ways, line bytes), the size
/// rounded down so the sets are a power of two (callgrind's simulator needs that).
fn sysfs_cache(level: u32, instruction: bool) -> Option<(u64, u64, u64)> {
    for i in 0..8 {
        let base = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
        let rd = |f: &str| std::fs::read_to_string(format!("{base}/{f}")).ok();
        let lv = rd("level")?;
        let ty = rd("type").unwrap_or_default();
        if lv.trim() != level.to_string() || (ty.trim() == "Instruction") != instruction {
            continue;
        }
        let size = rd("size")?;
        let size = size.trim();
        let bytes = match size.strip_suffix('K') {
            Some(n) => n.parse::<u64>().ok()? << 10,
            None => match size.strip_suffix('M') {
                Some(n) => n.parse::<u64>().ok()? << 20,
                None => size.parse().ok()?,
            },
        };
        let ways: u64 = rd("ways_of_associativity")?.trim().parse().ok()?;
        let line: u64 = rd("coherency_line_size")?.trim().parse().ok()?;
        let sets = (bytes / ways.max(1) / line.max(1)).max(1);
        let sets = 1u64 << (63 - sets.leading_zeros());
        return Some((sets * ways * line, ways, line));
    }
    None
}

/// callgrind's cache-simulator options for this machine's L1i, L1d and L2 (the L2 as
/// callgrind's last level), where sysfs describes them; else callgrind's own detection.
pub fn cache_sim_args() -> Vec<String> {
    let mut a = vec!["--cache-sim=yes".to_string()];
    let fmt = |(s, w, l): (u64, u64, u64)| format!("{s},{w},{l}");
    if let (Some(i1), Some(d1), Some(l2)) = (
        sysfs_cache(1, true),
        sysfs_cache(1, false),
        sysfs_cache(2, false),
    ) {
        a.push(format!("--I1={}", fmt(i1)));
        a.push(format!("--D1={}", fmt(d1)));
        a.push(format!("--LL={}", fmt(l2)));
    }
    a
}

/// The workspace root (this crate's parent).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn output(cmd: &mut Command) -> Result<String, String> {
    let o = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Builds `per_packet` in release and returns its path.
pub fn build_per_packet() -> Result<PathBuf, String> {
    let root = workspace_root();
    let meta = output(Command::new("cargo").current_dir(&root).args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
    ]))?;
    let v: serde_json::Value = serde_json::from_str(&meta).map_err(|e| e.to_string())?;
    let target = v["target_directory"]
        .as_str()
        .ok_or("cargo metadata: no target_directory")?
        .to_string();
    let st = Command::new("cargo")
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "knits-core",
            "--example",
            "per_packet",
        ])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !st.success() {
        return Err("cargo build --release -p knits-core --example per_packet failed".into());
    }
    Ok(Path::new(&target).join("release/examples/per_packet"))
}

/// Counts one class under callgrind: `n` measured frames.
pub fn count_class(bin: &Path, class: &str, n: u64) -> Result<ClassCost, String> {
    let out = std::env::temp_dir().join(format!(
        "knits-np-sim-callgrind-{}-{class}",
        std::process::id()
    ));
    let o = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg("--toggle-collect=per_packet::measured")
        .args(cache_sim_args())
        .arg(bin)
        .arg(n.to_string())
        .arg(class)
        .output()
        .map_err(|e| format!("cannot run valgrind ({e}); install it (apt-get install valgrind)"))?;
    if !o.status.success() {
        return Err(format!(
            "{class}: valgrind failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let _ = std::fs::remove_file(&out);
    let counts = parse_callgrind(&text).map_err(|e| format!("{class}: {e}"))?;
    let mut k = class_cost(class, &counts, n)?;
    let (l1, l2) = cache_misses(&text)
        .ok_or_else(|| format!("{class}: callgrind's output has no cache events"))?;
    let per = |v: u64| (v as f64 / n as f64 * 1000.0).round() / 1000.0;
    (k.l1_misses, k.l2_misses) = (per(l1), per(l2));
    Ok(k)
}

/// Frames counted for `class` when `n` are asked for.
pub fn packets_for(class: &str, n: u64) -> u64 {
    match class {
        "handoff" | "fakefin" => n.min(crate::classes::HANDOFFS as u64),
        "ack-cold" => n.min(65_536),
        // The classes benchmark's chunk: the same table, so the same cache working set.
        "syn" => 50_000,
        _ => n,
    }
    .max(1)
}

/// Counts every class (`n` frames each; `handoff` and `fakefin` at most 1,000, `ack-cold` at
/// most 65,536).
pub fn calibrate(n: u64, log: &mut dyn FnMut(&str)) -> Result<Calibration, String> {
    let root = workspace_root();
    let bin = build_per_packet()?;
    let mut classes = BTreeMap::new();
    for class in CLASSES {
        let k = count_class(&bin, class, packets_for(class, n))?;
        log(&format!("{class:<11} {:>7.1} instructions", k.instructions));
        classes.insert(class.to_string(), k);
    }
    let commit =
        output(
            Command::new("git")
                .current_dir(&root)
                .args(["rev-parse", "--short=12", "HEAD"]),
        )
        .unwrap_or_else(|_| "unknown".into());
    let dirty = output(Command::new("git").current_dir(&root).args([
        "status",
        "--porcelain",
        "--",
        "knits-core",
    ]))
    .map(|s| !s.is_empty())
    .unwrap_or(false);
    Ok(Calibration {
        command: "cargo run --release -p knits-np-sim -- calibrate".into(),
        commit: if dirty {
            format!("{commit}-dirty")
        } else {
            commit
        },
        rustc: output(Command::new("rustc").arg("-V")).unwrap_or_else(|_| "unknown".into()),
        cache: cache_sim_args()[1..].join(" "),
        packets: n,
        tolerance: 0.10,
        classes,
    })
}

// ---------------------------------------------------------------------------------------------
// The classes' meter traces.

/// Runs each class once through the real switch with a [`TraceMeter`] (after one frame of the
/// class, so the recorded one meets the steady state the callgrind counts average over) and
/// returns a trace set of one packet per class, `class` set, flows distinct.
pub fn class_traces(classes: &[&str]) -> Result<TraceSet, String> {
    use knits_core::switch::{FrameMeta, Sink, Verdict};
    struct Count(usize);
    impl Sink for Count {
        fn emit(&mut self, _: u8, _: &[u8]) -> bool {
            self.0 += 1;
            true
        }
    }
    let mut set = TraceSet::default();
    for (i, class) in classes.iter().enumerate() {
        let mut run = crate::classes::setup(class, 3)?;
        let mut buf = vec![0u8; run.max_len()];
        let mut meter = TraceMeter::new();
        let mut verdict = Verdict::Forward(0);
        let mut len = 0;
        let mut sink = Count(0);
        for k in 0..2 {
            let (port, f) = run.frame(k);
            len = f.len();
            buf[..len].copy_from_slice(f);
            meter.clear();
            sink.0 = 0;
            verdict = run.sw.process(
                port,
                run.now,
                &mut buf[..len],
                FrameMeta::FULL,
                &mut sink,
                &mut meter,
            );
        }
        let outcome = match verdict {
            Verdict::Forward(_) => Outcome::Forward,
            Verdict::Local(_) => Outcome::Local,
            Verdict::Drop(_) => Outcome::Drop,
        };
        // The workload's classifier must put the class's own frame in the class.
        let seen = class_of(&buf[..len], verdict, sink.0, &meter.recs);
        // ack-cold's frames are ACKs: in a workload they are charged as ack (the model adds
        // the cost of a cold table through the memory unit).
        let own = class_index(if *class == "ack-cold" { "ack" } else { class });
        if seen != own {
            return Err(format!(
                "class {class}: class_of takes its frame for {}",
                CLASSES.get(seen as usize).unwrap_or(&"none")
            ));
        }
        set.push(0, len, i as u32, outcome, &meter);
        if let Some(p) = set.packets.last_mut() {
            p.class = class_index(class);
        }
    }
    Ok(set)
}

/// The class whose calibrated cost a workload packet is charged: from what the switch did with
/// it (its verdict, the frames it generated, the records of its meter) and its headers.
/// A TCP segment whose processing read two flow records (the connection and its splice
/// binding) is on a spliced flow.
pub fn class_of(
    frame: &[u8],
    verdict: knits_core::switch::Verdict,
    generated: usize,
    recs: &[crate::trace::Rec],
) -> u8 {
    use knits_core::counters::LocalKind;
    use knits_core::switch::Verdict;
    use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket};
    let name = match verdict {
        Verdict::Local(LocalKind::Arp) => "arp",
        Verdict::Local(LocalKind::Control) => "handoff",
        Verdict::Local(_) => "fakefin",
        Verdict::Drop(_) => "malformed",
        Verdict::Forward(_) if generated > 0 => "fakefin",
        Verdict::Forward(_) => {
            let eth = EthernetFrame::new_checked(frame).ok();
            let ip = eth
                .as_ref()
                .filter(|e| e.ethertype() == EthernetProtocol::Ipv4)
                .and_then(|e| Ipv4Packet::new_checked(e.payload()).ok());
            match ip {
                Some(ip) if ip.next_header() == IpProtocol::Tcp => {
                    match TcpPacket::new_checked(ip.payload()) {
                        Ok(t) if t.syn() && !t.ack() => "syn",
                        Ok(t) => {
                            let entries: u32 = recs
                                .iter()
                                .filter(|r| r.op == crate::trace::Op::TableEntry)
                                .map(|r| r.n)
                                .sum();
                            if entries >= 2 {
                                "spliced"
                            } else if t.payload().is_empty() {
                                "ack"
                            } else {
                                "data"
                            }
                        }
                        Err(_) => "malformed",
                    }
                }
                Some(_) => "ip-forward",
                None => "malformed",
            }
        }
    };
    class_index(name)
}

/// A class's index in [`CLASSES`] (`u8::MAX` for none).
pub fn class_index(class: &str) -> u8 {
    CLASSES
        .iter()
        .position(|c| *c == class)
        .map(|i| i as u8)
        .unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "# callgrind format
version: 1
positions: line
events: Ir
summary: 600

ob=(1) /bin/per_packet
fl=(1) /w/knits-core/src/switch/mod.rs
fn=(1) knits_core::switch::Switch::process
10 100
fi=(2) /w/knits-core/src/checksum.rs
+2 200
fe=(1)
-1 50
cfn=(2) knits_core::table::FlowTable::lookup
calls=1 5
12 400
fl=(3) /rustc/abc/library/core/src/slice/mod.rs
fn=(2)
5 150
fn=(3) knits_core::switch::handoff::<impl knits_core::switch::Switch>::on_leg
6 60
fl=(4) /w/knits-core/src/seq.rs
fn=(4) knits_core::seq::SeqNumber::lt
7 20
fl=(5) /w/knits-core/examples/per_packet.rs
fn=(5) per_packet::measured
1 10
fl=(6) /rustc/abc/library/core/src/ptr/mod.rs
fn=(6) core::ptr::drop_in_place
1 10
";

    #[test]
    fn callgrind_output_is_read_by_file_and_function() {
        let c = parse_callgrind(SAMPLE).unwrap();
        let get = |f: &str, g: &str| c.get(&(f.to_string(), g.to_string())).copied();
        let p = "knits_core::switch::Switch::process";
        assert_eq!(get("/w/knits-core/src/switch/mod.rs", p), Some(150));
        assert_eq!(get("/w/knits-core/src/checksum.rs", p), Some(200));
        // The call's inclusive cost (400) is not counted as the caller's own.
        let lookup = "knits_core::table::FlowTable::lookup";
        assert_eq!(
            get("/rustc/abc/library/core/src/slice/mod.rs", lookup),
            Some(150)
        );
        // A summary that the lines do not add up to is refused.
        let bad = SAMPLE.replace("summary: 600", "summary: 599");
        assert!(
            parse_callgrind(&bad)
                .unwrap_err()
                .contains("summary says 599")
        );
        assert!(parse_callgrind("events: Dr\n").is_err());
    }

    #[test]
    fn instructions_go_to_the_stage_of_their_file_or_function() {
        let c = parse_callgrind(SAMPLE).unwrap();
        let k = class_cost("ack", &c, 10).unwrap();
        // std inlined into FlowTable::lookup -> table.rs -> lookup; into handoff -> splice.
        assert_eq!(k.stages["pipeline"], 15.0);
        assert_eq!(k.stages["checksum"], 20.0);
        assert_eq!(k.stages["lookup"], 15.0);
        assert_eq!(k.stages["splice"], 6.0);
        // seq.rs (sequence arithmetic) is the tracking stage's.
        assert_eq!(k.stages["track"], 2.0);
        assert!(k.unknown_files.is_empty(), "{:?}", k.unknown_files);
        // A knits-core file the table does not list: other, and named.
        let c2 = parse_callgrind(&SAMPLE.replace("seq.rs", "log.rs")).unwrap();
        let k2 = class_cost("ack", &c2, 10).unwrap();
        assert_eq!(k2.stages["other"], 2.0);
        assert_eq!(k2.unknown_files, vec!["log.rs".to_string()]);
        // std code of a non-stage function: glue; the harness is not counted.
        assert_eq!(k.stages["glue"], 1.0);
        assert_eq!(k.instructions, 59.0);
        // The future layout's files map by the same table.
        assert_eq!(
            stage_of("/w/knits-core/src/switch/track.rs", "x"),
            Some("track")
        );
        assert_eq!(
            stage_of("/w/knits-core/src/switch/new.rs", "x"),
            Some("other")
        );
        assert_eq!(
            stage_of(
                "/rustc/core/src/num/mod.rs",
                "knits_core::switch::rewrite::Rewriter::apply"
            ),
            Some("rewrite")
        );
    }

    fn cal(ack: f64, parse: f64) -> Calibration {
        let mut stages = BTreeMap::new();
        stages.insert("parse".to_string(), parse);
        stages.insert("pipeline".to_string(), ack - parse);
        let mut classes = BTreeMap::new();
        classes.insert(
            "ack".to_string(),
            ClassCost {
                description: String::new(),
                packets: 10,
                instructions: ack,
                stages,
                unknown_files: vec![],
                l1_misses: 8.0,
                l2_misses: 0.0,
            },
        );
        Calibration {
            command: String::new(),
            commit: "x".into(),
            rustc: "r".into(),
            cache: String::new(),
            packets: 10,
            tolerance: 0.10,
            classes,
        }
    }

    #[test]
    fn a_stale_calibration_is_found() {
        let old = cal(1000.0, 200.0);
        assert!(stale(&old, &cal(1050.0, 230.0)).is_empty());
        let s = stale(&old, &cal(1200.0, 200.0));
        assert!(s.iter().any(|m| m.contains("class ack: 1200")), "{s:?}");
        // The total unchanged, but 150 instructions moved between stages: stale too.
        let s = stale(&old, &cal(1000.0, 350.0));
        assert!(s.iter().any(|m| m.contains("stage parse")), "{s:?}");
        // Misses: 10 % of 8 is less than the floor of half a miss a packet.
        let mut m = cal(1000.0, 200.0);
        m.classes.get_mut("ack").unwrap().l1_misses = 8.4;
        m.classes.get_mut("ack").unwrap().l2_misses = 0.4;
        assert!(stale(&old, &m).is_empty(), "{:?}", stale(&old, &m));
        m.classes.get_mut("ack").unwrap().l2_misses = 0.6;
        assert!(
            stale(&old, &m)[0].contains("L2 misses"),
            "{:?}",
            stale(&old, &m)
        );
        m.classes.get_mut("ack").unwrap().l1_misses = 6.0;
        assert!(stale(&old, &m).iter().any(|x| x.contains("L1d misses")));
        let mut gone = cal(1000.0, 200.0);
        gone.classes.clear();
        assert!(stale(&old, &gone)[0].contains("no longer counted"));
    }

    #[test]
    fn cache_misses_are_read_from_the_summary() {
        let text = "events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw\nfl=a.rs\nfn=f\n1 10 0 0 0 0 0 0 0 0\n\
                    summary: 2131056 454676 282000 79 5828 3642 77 1 12\n";
        // D1 misses 9470, of which 13 also missed the last level.
        assert_eq!(cache_misses(text), Some((9457, 13)));
        assert_eq!(cache_misses("events: Ir\nsummary: 5\n"), None);
        // Trailing zero columns left out (a class that misses nothing).
        let none =
            "events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw\nsummary: 1580000 360000 340000 1\n";
        assert_eq!(cache_misses(none), Some((0, 0)));
    }

    #[test]
    fn the_checked_in_calibration_parses_and_round_trips() {
        let c = Calibration::checked_in();
        for class in CLASSES {
            let k = c
                .classes
                .get(class)
                .unwrap_or_else(|| panic!("calibration.toml has no class {class}"));
            let sum: f64 = k.stages.values().sum();
            assert!(
                (sum - k.instructions).abs() <= 0.1 * k.stages.len() as f64,
                "{class}: stages add up to {sum}, total {}",
                k.instructions
            );
        }
        assert_eq!(Calibration::from_toml(&c.to_toml()).unwrap(), c);
        let bad = CHECKED_IN.replacen("tolerance = 0.1", "tolerance = 2.0", 1);
        assert!(Calibration::from_toml(&bad).is_err());
    }

    #[test]
    fn every_class_runs_through_the_real_switch() {
        let t = class_traces(&CLASSES).unwrap();
        for (i, p) in t.packets.iter().enumerate() {
            assert_eq!(p.class as usize, i);
        }
        let cold = t.recs_of(&t.packets[class_index("ack-cold") as usize]);
        let ack = t.recs_of(&t.packets[class_index("ack") as usize]);
        assert_eq!(cold, ack, "ack-cold's frame takes ack's path");
        assert_eq!(t.packets.len(), CLASSES.len());
        let o: Vec<Outcome> = t.packets.iter().map(|p| p.outcome).collect();
        assert_eq!(o[class_index("malformed") as usize], Outcome::Drop);
        assert_eq!(o[class_index("arp") as usize], Outcome::Local);
        assert_eq!(o[class_index("handoff") as usize], Outcome::Local);
        assert_eq!(o[class_index("ip-forward") as usize], Outcome::Forward);
    }
}
