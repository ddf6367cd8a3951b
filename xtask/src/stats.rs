//! The statistics of `cargo xtask bench`: medians of ratios, the intervals around them, and
//! each storm's verdict against its target. Pure functions of the numbers measured.

/// The middle of the values (the mean of the middle two of an even count); 0 when empty.
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A run's rate as a ratio to the mean of the untraced runs either side of it.
pub(crate) fn bracketed(rate: f64, before: f64, after: f64) -> f64 {
    rate / ((before + after) / 2.0).max(1.0)
}

/// The harness's own noise: each untraced run between two others, as a ratio to their mean,
/// as though it had been a traced run. A tracer that cost nothing would score these.
pub(crate) fn control_ratios(untraced: &[f64]) -> Vec<f64> {
    untraced
        .windows(3)
        .map(|w| bracketed(w[1], w[0], w[2]))
        .collect()
}

/// A distribution-free 95% confidence interval for the median of sorted values: the order
/// statistics j and n-j+1 for the largest j with 2·P(Bin(n, 1/2) ≤ j-1) ≤ 0.05. `None` below
/// six values, where no such j exists.
pub(crate) fn median_ci(sorted: &[f64]) -> Option<(f64, f64)> {
    let n = sorted.len();
    let mut below = 0.0; // P(X ≤ i-1)
    let mut p = 0.5f64.powi(n as i32); // P(X = i)
    let mut j = 0;
    for i in 0..n {
        if 2.0 * (below + p) > 0.05 {
            break;
        }
        below += p;
        j = i + 1;
        p *= (n - i) as f64 / (i + 1) as f64;
    }
    (j >= 1).then(|| (sorted[j - 1], sorted[n - j]))
}

/// Resamples drawn by [`median_ci_drift`]: enough for its 2.5% and 97.5% points to settle.
const RESAMPLES: usize = 4000;

/// A 95% confidence interval for the median of rounds run one after another, from a
/// moving-block bootstrap (Künsch 1989): each resample strings together runs of ⌈n^⅓⌉
/// consecutive rounds, so it keeps the correlation between rounds a few apart (this machine's
/// speed carries over from one round to the next). The binomial interval ([`median_ci`]) takes
/// the rounds as independent and comes out too narrow when they are not. A drift over the whole
/// run is beyond any interval from the run itself. The seed is fixed: the same rounds give the
/// same interval. `None` below six rounds.
pub(crate) fn median_ci_drift(in_order: &[f64]) -> Option<(f64, f64)> {
    let n = in_order.len();
    if n < 6 {
        return None;
    }
    let block = block_len(n);
    let mut rng = fastrand::Rng::with_seed(0x6e73_7472_6163_6521);
    let mut medians = Vec::with_capacity(RESAMPLES);
    let mut sample = Vec::with_capacity(n + block);
    for _ in 0..RESAMPLES {
        sample.clear();
        while sample.len() < n {
            let start = rng.usize(..=n - block);
            sample.extend_from_slice(&in_order[start..start + block]);
        }
        sample.truncate(n);
        medians.push(median(&mut sample));
    }
    medians.sort_by(f64::total_cmp);
    let at = |q: f64| medians[((RESAMPLES - 1) as f64 * q).round() as usize];
    Some((at(0.025), at(0.975)))
}

/// The block length of [`median_ci_drift`] for `n` rounds: ⌈n^⅓⌉, in integers (the float cube
/// root of 27 is a hair above 3).
fn block_len(n: usize) -> usize {
    (1..=n).find(|b| b * b * b >= n).unwrap_or(n)
}

/// The interval the table shows for a median of rounds in run order: the wider of the
/// binomial one and the block bootstrap's at each end. The bootstrap keeps the correlation
/// between nearby rounds; over few rounds it runs narrow, and there the binomial one holds.
pub(crate) fn ratio_ci(in_order: &[f64]) -> Option<(f64, f64)> {
    let mut sorted = in_order.to_vec();
    sorted.sort_by(f64::total_cmp);
    match (median_ci(&sorted), median_ci_drift(in_order)) {
        (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
        (one, other) => one.or(other),
    }
}

/// A storm's target: the least median ratio, and whether a lost sample fails it.
#[derive(Default, Clone, Copy)]
pub(crate) struct Target {
    pub(crate) ratio: f64,
    pub(crate) none_lost: bool,
}

impl Target {
    pub(crate) fn text(self) -> String {
        let lost = if self.none_lost { ", 0 lost" } else { "" };
        format!("≥ {:.2}{lost}", self.ratio)
    }

    pub(crate) fn met(self, median: f64, lost: u64) -> bool {
        median >= self.ratio && (!self.none_lost || lost == 0)
    }

    /// Whether the median meets the target, and whether its interval (`ci`) clears the
    /// target or straddles it: a run can only say "met" as surely as its noise allows. No
    /// interval (under six rounds) is no certainty.
    pub(crate) fn verdict(self, median: f64, ci: Option<(f64, f64)>, lost: u64) -> Verdict {
        if self.none_lost && lost > 0 {
            return Verdict::Missed;
        }
        let (lo, hi) = ci.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
        match (self.met(median, lost), lo >= self.ratio, hi < self.ratio) {
            (true, true, _) => Verdict::Met,
            (true, false, _) => Verdict::MetWithinNoise,
            (false, _, true) => Verdict::Missed,
            (false, _, false) => Verdict::MissedWithinNoise,
        }
    }
}

/// A storm's target against its median ratio and that median's interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Verdict {
    /// The whole interval is at or above the target.
    Met,
    /// The median meets the target; the interval reaches below it.
    MetWithinNoise,
    /// The median misses the target; the interval reaches it.
    MissedWithinNoise,
    /// The whole interval is below the target, or a sample was lost where none may be.
    Missed,
}

impl Verdict {
    /// A measurement with no interval: met or missed.
    pub(crate) fn of(met: bool) -> Self {
        if met { Self::Met } else { Self::Missed }
    }

    pub(crate) fn met(self) -> bool {
        matches!(self, Self::Met | Self::MetWithinNoise)
    }

    pub(crate) fn clear(self) -> bool {
        matches!(self, Self::Met | Self::Missed)
    }

    pub(crate) fn text(self) -> &'static str {
        match self {
            Self::Met => "yes",
            Self::MetWithinNoise => "yes, within the noise",
            Self::MissedWithinNoise => "no, within the noise",
            Self::Missed => "no",
        }
    }

    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::MetWithinNoise => "met_within_noise",
            Self::MissedWithinNoise => "missed_within_noise",
            Self::Missed => "missed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn control_ratios_bracket_each_inner_run() {
        assert_eq!(control_ratios(&[1.0, 2.0]), Vec::<f64>::new());
        assert_eq!(control_ratios(&[1.0, 2.0, 3.0, 1.0]), vec![1.0, 2.0]);
    }

    #[test]
    fn median_leaves_the_values_sorted() {
        // The table reads the range from the slice the median sorted.
        let mut values = [3.0, 1.0, 4.0, 2.0];
        assert_eq!(median(&mut values), 2.5);
        assert_eq!(values, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn bracketed_divides_by_the_mean_of_the_runs_either_side() {
        assert_eq!(bracketed(90.0, 80.0, 120.0), 0.9);
        // Below one operation a second, the mean counts as one.
        assert_eq!(bracketed(0.5, 0.2, 0.4), 0.5);
    }

    #[test]
    fn median_ci_takes_the_binomial_order_statistics() {
        let values: Vec<f64> = (1..=30).map(f64::from).collect();
        // P(Bin(30, 1/2) ≤ 9) = 0.0214 and P(≤ 10) = 0.0494: the 10th and 21st values.
        assert_eq!(median_ci(&values), Some((10.0, 21.0)));
        // P(Bin(6, 1/2) ≤ 0) = 1/64: the extremes, the smallest count with an interval.
        let six: Vec<f64> = (1..=6).map(f64::from).collect();
        assert_eq!(median_ci(&six), Some((1.0, 6.0)));
        // 2·P(Bin(5, 1/2) = 0) = 1/16 > 0.05: no 95% interval from five values.
        assert_eq!(median_ci(&six[..5]), None);
        assert_eq!(median_ci(&[]), None);
    }

    #[test]
    fn the_block_bootstrap_widens_the_interval_of_drifting_rounds() {
        let constant = [0.97; 30];
        assert_eq!(median_ci_drift(&constant), Some((0.97, 0.97)));
        assert_eq!(median_ci_drift(&constant[..5]), None);
        // The same thirty values: rising round after round (a drift), and interleaved low and
        // high (none). Blocks of consecutive rounds carry the drift into every resample.
        let drifting: Vec<f64> = (1..=30).map(f64::from).collect();
        let interleaved: Vec<f64> = (1..=15)
            .flat_map(|i| [f64::from(i), f64::from(31 - i)])
            .collect();
        let width = |v: &[f64]| {
            let (lo, hi) = median_ci_drift(v).unwrap();
            assert!(lo <= 15.5 && 15.5 <= hi, "{lo}-{hi} holds the median");
            hi - lo
        };
        assert!(
            width(&drifting) > 1.5 * width(&interleaved),
            "{} vs {}",
            width(&drifting),
            width(&interleaved)
        );
        // A fixed seed: the same rounds, the same interval.
        assert_eq!(median_ci_drift(&drifting), median_ci_drift(&drifting));
        // Blocks of ⌈n^⅓⌉ rounds, exactly at the cubes.
        let blocks: Vec<usize> = [6, 8, 9, 27, 28, 30, 90, 125].map(block_len).into();
        assert_eq!(blocks, [2, 2, 3, 3, 4, 4, 5, 5]);
    }

    #[test]
    fn the_table_interval_is_the_wider_of_the_two_at_each_end() {
        let drifting: Vec<f64> = (1..=30).map(f64::from).collect();
        let (lo, hi) = ratio_ci(&drifting).unwrap();
        let (blo, bhi) = median_ci(&drifting).unwrap();
        let (dlo, dhi) = median_ci_drift(&drifting).unwrap();
        assert_eq!((lo, hi), (blo.min(dlo), bhi.max(dhi)));
        assert_eq!(ratio_ci(&drifting[..5]), None);
    }

    #[test]
    fn the_table_interval_holds_the_median() {
        // Six values: the binomial interval is the extremes, and no resample goes past them.
        assert_eq!(ratio_ci(&[3.0, 1.0, 6.0, 2.0, 5.0, 4.0]), Some((1.0, 6.0)));
        let interleaved: Vec<f64> = (1..=15)
            .flat_map(|i| [f64::from(i), f64::from(31 - i)])
            .collect();
        let (lo, hi) = ratio_ci(&interleaved).unwrap();
        assert!(lo <= 15.5 && 15.5 <= hi, "{lo}-{hi}");
    }

    #[test]
    fn the_bootstrap_interval_stays_within_the_rounds() {
        let rounds = [0.91, 0.97, 0.88, 0.95, 0.99, 0.93, 0.90, 0.96];
        let (lo, hi) = median_ci_drift(&rounds).unwrap();
        assert!(0.88 <= lo && lo <= hi && hi <= 0.99, "{lo}-{hi}");
        assert_eq!(median_ci_drift(&rounds), Some((lo, hi)));
    }

    #[test]
    fn a_verdict_says_whether_the_interval_clears_the_target() {
        let fork = Target {
            ratio: 0.95,
            none_lost: false,
        };
        assert_eq!(fork.verdict(0.97, Some((0.96, 0.99)), 0), Verdict::Met);
        assert_eq!(
            fork.verdict(0.97, Some((0.93, 0.99)), 0),
            Verdict::MetWithinNoise
        );
        assert_eq!(
            fork.verdict(0.94, Some((0.91, 0.96)), 0),
            Verdict::MissedWithinNoise
        );
        assert_eq!(fork.verdict(0.90, Some((0.88, 0.94)), 0), Verdict::Missed);
        assert_eq!(fork.verdict(0.97, None, 0), Verdict::MetWithinNoise);
        // An interval that touches the target from above clears it; from below it does not.
        assert_eq!(fork.verdict(0.96, Some((0.95, 0.99)), 0), Verdict::Met);
        assert_eq!(
            fork.verdict(0.93, Some((0.90, 0.95)), 0),
            Verdict::MissedWithinNoise
        );
        let setns = Target {
            ratio: 0.60,
            none_lost: true,
        };
        assert_eq!(setns.verdict(0.70, Some((0.65, 0.75)), 1), Verdict::Missed);
        assert!(Verdict::MetWithinNoise.met() && !Verdict::MetWithinNoise.clear());
        assert!(!Verdict::Missed.met() && Verdict::Missed.clear());
    }

    #[test]
    fn a_measurement_without_an_interval_is_met_or_missed() {
        assert_eq!(Verdict::of(true), Verdict::Met);
        assert_eq!(Verdict::of(false), Verdict::Missed);
        assert_eq!(
            [Verdict::Met, Verdict::MetWithinNoise].map(Verdict::text),
            ["yes", "yes, within the noise"]
        );
        assert_eq!(Verdict::MissedWithinNoise.key(), "missed_within_noise");
    }

    #[test]
    fn a_target_needs_the_ratio_and_for_setns_no_loss() {
        let setns = Target {
            ratio: 0.60,
            none_lost: true,
        };
        assert!(setns.met(0.61, 0));
        assert!(!setns.met(0.61, 1));
        assert!(!setns.met(0.59, 0));
        let fork = Target {
            ratio: 0.95,
            none_lost: false,
        };
        assert!(fork.met(0.95, 3));
        assert_eq!(setns.text(), "≥ 0.60, 0 lost");
    }
}
