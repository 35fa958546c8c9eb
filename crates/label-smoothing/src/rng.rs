//! A small seeded generator (SplitMix64): the same numbers on every platform, for mixup and CutMix (and, in
//! `lsmooth`, data splits, label noise, batch order and weight initialisation). With normal, gamma and beta draws.

/// SplitMix64 (Steele, Lea and Flood 2014): 64 bits of state, passes BigCrush, trivially seedable.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Uniform in `0..n` (`n > 0`), without modulo bias worth speaking of (Lemire's multiply-shift).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// A standard normal draw (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // in (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// A Gamma(`shape`, 1) draw, `shape > 0` (Marsaglia and Tsang 2000; shapes below 1 by the boost
    /// `Gamma(a) = Gamma(a + 1) * U^(1/a)`).
    pub fn gamma(&mut self, shape: f64) -> f64 {
        if shape < 1.0 {
            let u = 1.0 - self.next_f64();
            return self.gamma(shape + 1.0) * u.powf(1.0 / shape);
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let x = self.normal();
            let v = (1.0 + c * x).powi(3);
            if v <= 0.0 {
                continue;
            }
            let u = 1.0 - self.next_f64();
            if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
                return d * v;
            }
        }
    }

    /// A Beta(`a`, `b`) draw, `a, b > 0`.
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        let x = self.gamma(a);
        let y = self.gamma(b);
        if x + y == 0.0 {
            // Both underflowed (tiny shapes): the mass sits at the ends.
            return if self.next_f64() < a / (a + b) { 1.0 } else { 0.0 };
        }
        x / (x + y)
    }

    /// A Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// The seeded problem that the benchmarks time (`lsmooth bench`, `cargo bench`, the `time_loss` example): `n * k`
/// logits uniform in `[-4, 4)` (24 random bits each, row-major), then `n` labels uniform in `0..k`, all from one
/// [`SplitMix64`] stream started at `seed`.
///
/// ```
/// let (logits, labels) = label_smoothing::rng::benchmark_problem(3, 5, 42);
/// assert_eq!((logits.len(), labels.len()), (15, 3));
/// assert!(logits.iter().all(|z| (-4.0..4.0).contains(z)));
/// assert!(labels.iter().all(|&y| (0..5).contains(&y)));
/// ```
pub fn benchmark_problem(n: usize, k: usize, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut g = SplitMix64::new(seed);
    let logits = (0..n * k)
        .map(|_| ((g.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0)
        .collect();
    let labels = (0..n).map(|_| (g.next_u64() % k as u64) as i64).collect();
    (logits, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benchmark_problem_is_seeded_and_spread_over_its_range() {
        let (z, y) = benchmark_problem(64, 100, 9);
        assert_eq!(benchmark_problem(64, 100, 9), (z.clone(), y.clone()));
        assert_ne!(benchmark_problem(64, 100, 10).0, z);
        let mean = z.iter().map(|&v| v as f64).sum::<f64>() / z.len() as f64;
        assert!(mean.abs() < 0.1, "mean {mean}");
        let (lo, hi) = z.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!((-4.0..-3.99).contains(&lo) && hi < 4.0 && hi > 3.99, "[{lo}, {hi}]");
        assert!(y.iter().all(|&v| (0..100).contains(&v)));
    }

    #[test]
    fn shuffle_is_a_permutation_and_seeded() {
        let mut a: Vec<u32> = (0..1000).collect();
        let mut b = a.clone();
        SplitMix64::new(1).shuffle(&mut a);
        SplitMix64::new(1).shuffle(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, (0..1000).collect::<Vec<_>>());
        a.sort();
        assert_eq!(a, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn beta_draws_have_the_right_mean_and_variance() {
        let mut r = SplitMix64::new(11);
        for (a, b) in [(0.2, 0.2), (1.0, 1.0), (2.0, 5.0)] {
            let n = 200_000;
            let xs: Vec<f64> = (0..n).map(|_| r.beta(a, b)).collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            let (m, v) = (a / (a + b), a * b / ((a + b).powi(2) * (a + b + 1.0)));
            assert!(
                (mean - m).abs() < 4.0 * (v / n as f64).sqrt() + 1e-3,
                "Beta({a},{b}) mean {mean} vs {m}"
            );
            assert!((var - v).abs() < 0.05 * v, "Beta({a},{b}) variance {var} vs {v}");
            assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
        }
    }

    #[test]
    fn below_covers_its_range_evenly() {
        let mut r = SplitMix64::new(7);
        let mut counts = [0usize; 7];
        for _ in 0..70_000 {
            counts[r.below(7) as usize] += 1;
        }
        // Each count is Binomial(70000, 1/7): mean 10000, sd ~ 93.
        assert!(counts.iter().all(|&c| (9_500..10_500).contains(&c)), "{counts:?}");
    }
}
