//! The paper's statistic: seven runs per point, the highest and lowest dropped, the mean of the
//! rest, with the spread (smallest and largest kept value) beside it.

/// A summarised point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trimmed {
    /// Mean of the kept values.
    pub mean: f64,
    /// Smallest kept value.
    pub min: f64,
    /// Largest kept value.
    pub max: f64,
    /// Values kept.
    pub kept: usize,
    /// Values measured.
    pub runs: usize,
}

impl Trimmed {
    /// Spread of the kept values relative to the mean, in percent ((max - min) / mean).
    pub fn spread_pct(&self) -> f64 {
        if self.mean == 0.0 {
            0.0
        } else {
            100.0 * (self.max - self.min) / self.mean
        }
    }
}

/// Drops the highest and the lowest value when there are at least five (the paper: seven runs,
/// five kept), keeps every value otherwise; NaN values are ignored. `None` when nothing is left.
pub fn trimmed(values: &[f64]) -> Option<Trimmed> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let kept: &[f64] = if v.len() >= 5 { &v[1..v.len() - 1] } else { &v };
    Some(Trimmed {
        mean: kept.iter().sum::<f64>() / kept.len() as f64,
        min: kept[0],
        max: kept[kept.len() - 1],
        kept: kept.len(),
        runs: values.len(),
    })
}

/// Ratio `a / b`, NaN when either is missing or `b` is 0.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => a / b,
        _ => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seven_runs_drop_extremes() {
        let t = trimmed(&[10.0, 1.0, 5.0, 6.0, 4.0, 100.0, 5.0]).unwrap();
        assert_eq!(t.kept, 5);
        assert_eq!(t.runs, 7);
        assert_eq!(t.min, 4.0);
        assert_eq!(t.max, 10.0);
        assert!((t.mean - 6.0).abs() < 1e-12, "{t:?}");
        assert!((t.spread_pct() - 100.0).abs() < 1e-9);
    }

    #[test]
    fn few_runs_keep_everything() {
        let t = trimmed(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((t.kept, t.min, t.max, t.mean), (3, 1.0, 3.0, 2.0));
        let one = trimmed(&[7.0]).unwrap();
        assert_eq!((one.mean, one.spread_pct()), (7.0, 0.0));
    }

    #[test]
    fn nan_is_ignored_and_empty_is_none() {
        assert!(trimmed(&[]).is_none());
        assert!(trimmed(&[f64::NAN]).is_none());
        let t = trimmed(&[f64::NAN, 2.0, 4.0]).unwrap();
        assert_eq!((t.kept, t.runs, t.mean), (2, 3, 3.0));
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), 1.5);
        assert!(ratio(Some(3.0), Some(0.0)).is_nan());
        assert!(ratio(None, Some(1.0)).is_nan());
    }
}
