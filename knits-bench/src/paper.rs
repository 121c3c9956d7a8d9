//! The paper's own numbers (Papathanasiou and Van Hensbergen, "KNITS: Switch-based Connection
//! Hand-off", section V), as its text states them: /work/shared/reference/knits-paper.txt,
//! lines 225 (Fig. 6), 236 (Fig. 7) and 249 (Fig. 8). The figures' curves themselves are not in
//! the text; only these points are, so the second panel of each plot shows these points.
//! Setup: 866 MHz Pentium III soft-switch, Linux 2.4.4 Netfilter, MTU 1500, gigabit Ethernet.

/// Fig. 6: the largest throughput (Mbit/s) with responses up to 32 MB ("A direct connection
/// achieves a maximum throughput of 580 Mbit/s ...").
pub const FIG6_MAX_MBIT: &[(&str, f64)] = &[
    ("direct", 580.0),
    ("forward", 385.0),
    ("netfilter", 377.0),
    ("knits", 377.0),
    ("knits-h1", 371.0),
    ("knits-h2", 371.0),
];

/// Fig. 7: client latency (ms) for 64 KB responses.
pub const FIG7_64K_MS: &[(&str, f64)] = &[
    ("direct", 1.22),
    ("forward", 2.24),
    ("netfilter", 2.33),
    ("knits", 2.33),
    ("knits-h1", 2.62),
    ("knits-h2", 2.97),
];

/// Fig. 8: connections per second with one 64 KB request each (KNITS-Handoff-2 not given).
pub const FIG8_64K_CPS: &[(&str, f64)] = &[
    ("direct", 443.0),
    ("forward", 243.0),
    ("netfilter", 241.0),
    ("knits", 241.0),
    ("knits-h1", 197.0),
];

/// Response sizes (bytes) at which the text states each figure's values: Fig. 6's maxima are
/// "with a response size up to 32 MB" (drawn at 32 MiB), Fig. 7's and Fig. 8's "for response
/// sizes of 64 KB".
pub const FIG6_AT: u64 = 32 << 20;
/// See [`FIG6_AT`].
pub const FIG7_AT: u64 = 64 << 10;
/// See [`FIG6_AT`].
pub const FIG8_AT: u64 = 64 << 10;

/// Fig. 6's shape as the text describes it (line 227): "KNITS scales reasonably to around 64k
/// response sizes. After this point throughput levels out quickly." Drawn as a dashed plateau
/// at each stated maximum from this size on; it is a description, not data.
pub const FIG6_PLATEAU_FROM: u64 = 64 << 10;

/// Where the numbers come from, for captions.
pub const SOURCE: &str = "paper section V text (Fig. 6: max throughput up to 32 MB; Fig. 7: latency at 64 KB; Fig. 8: conn/s at 64 KB)";

/// The paper's value for `scenario` in `table`.
pub fn value(table: &[(&str, f64)], scenario: &str) -> Option<f64> {
    table.iter().find(|(s, _)| *s == scenario).map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_ratios_as_the_text_states_them() {
        // "reduces the maximum achievable throughput by 33% to 385 Mbit/s"
        let f = value(FIG6_MAX_MBIT, "forward").unwrap() / value(FIG6_MAX_MBIT, "direct").unwrap();
        assert!((f - 0.664).abs() < 0.01);
        // "KNITS with a single hand-off 197 connections per second" (0.82 of 241)
        let c = value(FIG8_64K_CPS, "knits-h1").unwrap() / value(FIG8_64K_CPS, "knits").unwrap();
        assert!((c - 0.82).abs() < 0.005);
        assert_eq!(value(FIG8_64K_CPS, "knits-h2"), None);
        for t in [FIG6_MAX_MBIT, FIG7_64K_MS, FIG8_64K_CPS] {
            for (s, _) in t {
                assert!(crate::scenario::by_name(s).is_some(), "{s}");
            }
        }
    }
}
