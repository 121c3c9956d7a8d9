//! Numbers for people, as every table and plot of the bench writes them (its own module so
//! that the report and the metrics parser share it without importing each other).

/// A number for people: 3 significant digits (thousands grouped), `-` when missing.
pub fn num(x: f64) -> String {
    if x.is_nan() || x.is_infinite() {
        return "-".into();
    }
    let a = x.abs();
    if a >= 1000.0 {
        let r = x.round() as i64;
        let s = r.unsigned_abs().to_string();
        let mut g = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i).is_multiple_of(3) {
                g.push(',');
            }
            g.push(c);
        }
        if r < 0 { format!("-{g}") } else { g }
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else if a == 0.0 {
        "0".into()
    } else {
        format!("{x:.3}")
    }
}
