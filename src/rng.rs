//! The one random number generator of the project: xoshiro256++ seeded through SplitMix64.
//!
//! Written here rather than taken from `rand` so that its stream is fixed forever (a seed in a
//! pipeline file must give the same weights next year) and its state is four `u64`s that a
//! checkpoint can store. Streams for different purposes are split off by name with
//! [`Rng::derive`], so adding a new consumer never shifts the numbers another one sees.

/// A seedable, splittable generator. Not cryptographic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [splitmix(&mut sm), splitmix(&mut sm), splitmix(&mut sm), splitmix(&mut sm)];
        Rng { s }
    }

    /// An independent generator for a named purpose and an index (epoch, layer...).
    pub fn derive(seed: u64, purpose: &str, index: u64) -> Self {
        let mut sm = seed ^ fnv1a(purpose).rotate_left(17) ^ index.wrapping_mul(0xA24B_AED4_963E_E407);
        Rng::new(splitmix(&mut sm))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in `[0, 1)`, 53 bits.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `[0, n)`; `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        // Lemire's multiply-shift; the bias is below 2^-32 for the sizes used here.
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// A standard normal deviate (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.uniform_f64();
        let u2 = self.uniform_f64();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_derived_streams_differ() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let x = Rng::derive(7, "init", 1).next_u64();
        let y = Rng::derive(7, "init", 2).next_u64();
        let z = Rng::derive(7, "order", 1).next_u64();
        assert!(x != y && x != z && y != z);
    }

    #[test]
    fn uniform_and_normal_have_the_right_moments() {
        let mut rng = Rng::new(1);
        let n = 200_000;
        let u: Vec<f32> = (0..n).map(|_| rng.uniform()).collect();
        let mean = u.iter().sum::<f32>() / n as f32;
        assert!((mean - 0.5).abs() < 0.01 && u.iter().all(|&v| (0.0..1.0).contains(&v)));
        let z: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        let m = z.iter().sum::<f32>() / n as f32;
        let var = z.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / n as f32;
        assert!(m.abs() < 0.01 && (var - 1.0).abs() < 0.02, "mean {m} var {var}");
        let mut counts = [0usize; 10];
        (0..n).for_each(|_| counts[rng.below(10)] += 1);
        assert!(counts.iter().all(|&c| (c as f32 - n as f32 / 10.0).abs() < 1000.0));
    }
}
