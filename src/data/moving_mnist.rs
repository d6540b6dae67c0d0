//! Moving MNIST as a labelled, reproducible video stream: the "MMNIST-SM64 v1" recipe.
//!
//! Each sequence is [`FRAMES_PER_SEQUENCE`] frames of a 64x64 uint8 canvas on which one or two
//! 28x28 MNIST digits move in straight lines and bounce off the walls. A [`MovingMnist`] holds the
//! digits of one [`MovingSplit`] and renders sequence `i` on demand ([`MovingMnist::sequence`]),
//! or plays consecutive sequences as a frame stream ([`MovingMnist::frames`]). Every frame
//! carries the labels of its digits and their per-frame latents (top-left corner, velocity
//! signs), so a probe can measure what each stage of a pipeline has learned.
//!
//! # Source
//!
//! The dynamics are those of the standard generator of Srivastava, Mansimov & Salakhutdinov,
//! "Unsupervised Learning of Video Representations using LSTMs" (ICML 2015, arXiv 1502.04681),
//! as read in the authors' `BouncingMNISTDataHandler`, kept exactly:
//!
//! - a uniform start `(y, x)` in `[0, 1)²` of the free range (64 − 28 = 36 px per axis);
//! - direction `θ` uniform, unit velocity `(sin θ, cos θ)`, fixed step 0.1 (3.6 px/frame);
//! - per frame: step first, then clamp-and-reflect per axis (x, then y), then record, so frame
//!   0 is already one step past the start;
//! - `top = trunc(36 y)`, `left = trunc(36 x)`; digits pasted unscaled, combined by `max`.
//!
//! The seeding and sampling follow the "MMNIST-SM64 v1" recipe of `samples/MOVING_MNIST.md`,
//! which pins golden SHA-256 hashes that `tests/moving_mnist.rs` checks:
//!
//! - sequence `i` uses a fresh [`SplitMix64`] seeded with `base + i` (base 0 for train, 2³² for
//!   test);
//! - per digit, in this order: `idx = floor(u N)`, `y = u`, `x = u`, `θ = 2π u`.
//!
//! # Deviations from the original generator
//!
//! - Deviation: SplitMix64 instead of NumPy's global Mersenne Twister. One 64-bit seed per
//!   sequence makes any sequence renderable alone, in any order or in parallel, and bit-exactly
//!   from any language, which a streamed training run needs to be reproducible and resumable.
//! - Deviation: digits are drawn with replacement (`floor(u N)`), not from a reshuffled
//!   permutation taken two at a time. A permutation ties sequence `i` to every sequence before
//!   it, which would break independent generation; with 60,000 digits the difference in the
//!   distribution is negligible.
//! - Deviation: the test stream draws from the 10,000 MNIST *test* images (the original uses
//!   training digits everywhere), so a probe of digit identity measures generalization to
//!   unseen handwriting. The train stream uses all 60,000 official training images, in the
//!   official order (the crate's 50k/10k train/validation cut does not apply here).
//! - The canvas is uint8 0..255 (the released test file's format) rather than float32 in `[0, 1]`;
//!   `max` commutes with the scaling, so the frames are the same up to that scale.
//! - [`Overlap::SumClip`] (sum, then clip at 255, as Tencia Lee's generator does) is offered as
//!   an option; the default is the original `max`.

use std::fmt;

use super::mnist::PIXELS;
use super::{Labelled, Split};

/// Canvas side in pixels.
pub const CANVAS: usize = 64;
/// Digit side in pixels (digits are pasted unscaled).
pub const DIGIT: usize = 28;
/// Pixels per frame (`CANVAS * CANVAS`).
pub const FRAME_PIXELS: usize = CANVAS * CANVAS;
/// Frames per sequence in the standard recipe.
pub const FRAMES_PER_SEQUENCE: usize = 20;
/// Step per frame, in units of the free range (`CANVAS - DIGIT` pixels).
pub const STEP: f64 = 0.1;
/// Seed of test sequence 0 (sequence `i` of the test split uses `TEST_BASE + i`).
pub const TEST_BASE: u64 = 1 << 32;
/// Seed of validation sequence 0 (sequence `i` of the validation split uses `VALIDATION_BASE + i`).
pub const VALIDATION_BASE: u64 = 1 << 33;
/// The most digits a sequence may hold (the recipe names 1 and 2).
pub const MAX_DIGITS: usize = 2;

/// Free range per axis in pixels: a position of 1.0 puts the digit against the far wall.
const RANGE: f64 = (CANVAS - DIGIT) as f64;

/// SplitMix64 (Steele, Lea & Flood 2014): the recipe's RNG, one per sequence.
///
/// Not cryptographic. Chosen because it is a few lines in any language and any 64-bit seed is a
/// good one, so a fresh generator per sequence costs nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose first output is the SplitMix64 output for `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`: the top 53 bits times 2⁻⁵³.
    pub fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Which MNIST images the digits come from, and which seeds the sequences use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MovingSplit {
    /// The 60,000 official training images, in official order; seeds `0 + i`.
    Train,
    /// The 10,000 official test images; seeds `2³² + i`.
    Test,
    /// The last 10,000 official training images (MNIST's usual validation split); seeds
    /// `2³³ + i`. A run that probes on them trains on [`MovingSplit::TrainLess`].
    Validation,
    /// The first 50,000 official training images, the training split of a run whose probes
    /// read [`MovingSplit::Validation`]; seeds `0 + i`.
    TrainLess,
}

impl MovingSplit {
    /// The seed of sequence 0.
    pub fn base(self) -> u64 {
        match self {
            MovingSplit::Train | MovingSplit::TrainLess => 0,
            MovingSplit::Test => TEST_BASE,
            MovingSplit::Validation => VALIDATION_BASE,
        }
    }

    /// The number of source digits (`N` in the recipe) when built from the full MNIST.
    pub fn source_len(self) -> usize {
        match self {
            MovingSplit::Train => 60_000,
            MovingSplit::TrainLess => 50_000,
            MovingSplit::Test | MovingSplit::Validation => 10_000,
        }
    }
}

impl fmt::Display for MovingSplit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MovingSplit::Train => "train",
            MovingSplit::Test => "test",
            MovingSplit::Validation => "validation",
            MovingSplit::TrainLess => "train less validation",
        })
    }
}

/// How overlapping digits combine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Overlap {
    /// Pixel-wise maximum, as the original generator (`np.maximum`).
    #[default]
    Max,
    /// Sum, saturating at 255 (Tencia Lee's generator).
    SumClip,
}

/// Why a [`MovingMnist`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MovingMnistError {
    /// The digit count is outside `1..=MAX_DIGITS`.
    #[error("moving mnist: {got} digits per sequence, expected 1 to {MAX_DIGITS}")]
    Digits {
        /// The count asked for.
        got: usize,
    },
    /// A sequence must hold at least one frame.
    #[error("moving mnist: frames_per_sequence must be at least 1, got 0")]
    NoFrames,
    /// The digit source is empty or its images and labels disagree.
    #[error("moving mnist {split}: {reason}")]
    Source {
        /// The split being built.
        split: MovingSplit,
        /// What is wrong.
        reason: String,
    },
}

/// Settings of a [`MovingMnist`]; [`MovingMnistConfig::build`] makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MovingMnistConfig {
    /// Digit source and seed base.
    pub split: MovingSplit,
    /// Digits per sequence: 2 is the standard recipe, 1 the single-digit variant (only digit 0
    /// is drawn, so its draws are those of digit 0 of the 2-digit sequence with the same seed).
    pub num_digits: usize,
    /// Frames per sequence; the trajectory continues the same way for any length, so the first
    /// 20 frames of a longer sequence are the standard sequence.
    pub frames_per_sequence: usize,
    /// How overlapping digits combine.
    pub overlap: Overlap,
}

impl MovingMnistConfig {
    /// The standard recipe for `split`: 2 digits, 20 frames, `max` overlap.
    pub fn new(split: MovingSplit) -> Self {
        MovingMnistConfig { split, num_digits: 2, frames_per_sequence: FRAMES_PER_SEQUENCE, overlap: Overlap::Max }
    }

    /// Builds the generator from loaded MNIST: for [`MovingSplit::Train`] all 60,000 official
    /// training images (`train` then `validation`, which is the official order), for
    /// [`MovingSplit::Test`] the test images, for [`MovingSplit::Validation`] and
    /// [`MovingSplit::TrainLess`] the `validation` and `train` rows.
    pub fn build(&self, mnist: &Labelled) -> Result<MovingMnist, MovingMnistError> {
        let source = match self.split {
            MovingSplit::Train => {
                let mut images = Vec::with_capacity(mnist.train.images.len() + mnist.validation.images.len());
                images.extend_from_slice(&mnist.train.images);
                images.extend_from_slice(&mnist.validation.images);
                let mut labels = Vec::with_capacity(mnist.train.len() + mnist.validation.len());
                labels.extend_from_slice(&mnist.train.labels);
                labels.extend_from_slice(&mnist.validation.labels);
                Split { images, labels }
            }
            MovingSplit::Test => mnist.test.clone(),
            MovingSplit::Validation => mnist.validation.clone(),
            MovingSplit::TrainLess => mnist.train.clone(),
        };
        self.build_from(source)
    }

    /// Builds the generator from any digit source (28x28 uint8 images and their labels); `N`
    /// is then `source.len()`.
    pub fn build_from(&self, source: Split) -> Result<MovingMnist, MovingMnistError> {
        if !(1..=MAX_DIGITS).contains(&self.num_digits) {
            return Err(MovingMnistError::Digits { got: self.num_digits });
        }
        if self.frames_per_sequence == 0 {
            return Err(MovingMnistError::NoFrames);
        }
        let bad = |reason: String| MovingMnistError::Source { split: self.split, reason };
        if source.is_empty() {
            return Err(bad("the digit source holds no image".into()));
        }
        if source.images.len() != source.len() * PIXELS {
            return Err(bad(format!(
                "{} image bytes for {} labels, expected {}",
                source.images.len(),
                source.len(),
                source.len() * PIXELS
            )));
        }
        Ok(MovingMnist { config: *self, source })
    }
}

/// A digit of a sequence: which source image, and its class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Digit {
    /// Index into the split's source images (0..60,000 for train, 0..10,000 for test).
    pub source_index: usize,
    /// The digit's class, 0..9.
    pub label: u8,
}

/// What moved where in one frame, per digit (in digit order).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FrameLatent {
    /// `(top, left)` of each digit's 28x28 box, each in `0..=36`.
    pub positions: Vec<(u8, u8)>,
    /// Signs of `(v_y, v_x)` after this frame's bounce: +1 down/right, -1 up/left, 0 if exactly
    /// zero (which needs `θ` at a multiple of π/2 to the last bit).
    pub velocity_signs: Vec<(i8, i8)>,
}

/// One rendered sequence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sequence {
    /// The sequence index within its split.
    pub index: u64,
    /// `frames * FRAME_PIXELS` bytes: frame-major, then row-major 64x64, uint8.
    pub frames: Vec<u8>,
    /// The digits, in draw order.
    pub digits: Vec<Digit>,
    /// One latent per frame.
    pub latents: Vec<FrameLatent>,
}

impl Sequence {
    /// Number of frames.
    pub fn len(&self) -> usize {
        self.latents.len()
    }

    /// True when the sequence holds no frame.
    pub fn is_empty(&self) -> bool {
        self.latents.is_empty()
    }

    /// The 64x64 pixels of frame `t`, or `None` past the end.
    pub fn frame(&self, t: usize) -> Option<&[u8]> {
        self.frames.get(t * FRAME_PIXELS..(t + 1) * FRAME_PIXELS)
    }

    /// The digits' labels, in digit order.
    pub fn labels(&self) -> Vec<u8> {
        self.digits.iter().map(|d| d.label).collect()
    }
}

/// One frame of the stream, with its place in the stream and its labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamFrame {
    /// The sequence the frame belongs to.
    pub sequence: u64,
    /// The frame's index within its sequence; 0 marks a cut from the previous sequence.
    pub t: usize,
    /// The 64x64 uint8 pixels, row-major (`FRAME_PIXELS` bytes).
    pub pixels: Vec<u8>,
    /// One label per digit, in digit order.
    pub labels: Vec<u8>,
    /// Positions and velocity signs of the digits in this frame.
    pub latent: FrameLatent,
}

impl StreamFrame {
    /// True for the first frame of a sequence: the previous frame belongs to another video.
    pub fn starts_sequence(&self) -> bool {
        self.t == 0
    }
}

/// The Moving MNIST generator for one split.
#[derive(Clone, Debug)]
pub struct MovingMnist {
    config: MovingMnistConfig,
    source: Split,
}

impl MovingMnist {
    /// The standard recipe (2 digits, 20 frames, `max`) for `split` of loaded MNIST.
    pub fn new(mnist: &Labelled, split: MovingSplit) -> Result<Self, MovingMnistError> {
        MovingMnistConfig::new(split).build(mnist)
    }

    /// The settings this generator was built with.
    pub fn config(&self) -> &MovingMnistConfig {
        &self.config
    }

    /// Number of source digits (`N`).
    pub fn source_len(&self) -> usize {
        self.source.len()
    }

    /// Renders sequence `i` of the split. Cheap enough to call per sequence: ~40 pastes.
    pub fn sequence(&self, i: u64) -> Sequence {
        let mut out = Sequence::default();
        self.sequence_into(i, &mut out);
        out
    }

    /// Renders sequence `i` into `out`, reusing its buffers (no allocation after the first call
    /// with the same settings).
    pub fn sequence_into(&self, i: u64, out: &mut Sequence) {
        let frames = self.config.frames_per_sequence;
        let digits = self.config.num_digits;
        let n = self.source.len();
        // MOVING_MNIST.md §2.4: a fresh generator per sequence, so sequences are independent.
        let mut rng = SplitMix64::new(self.config.split.base().wrapping_add(i));
        // All draws of digit 0, then of digit 1 (idx, y, x, θ), before any frame is rendered.
        let mut motion = [Motion::default(); MAX_DIGITS];
        out.index = i;
        out.digits.clear();
        for m in motion.iter_mut().take(digits) {
            // `u < 1` keeps `floor(u N) < N`; the `min` only guards against rounding.
            let source_index = ((rng.uniform_f64() * n as f64) as usize).min(n - 1);
            out.digits.push(Digit { source_index, label: self.source.labels[source_index] });
            let y = rng.uniform_f64();
            let x = rng.uniform_f64();
            let theta = rng.uniform_f64() * 2.0 * std::f64::consts::PI;
            *m = Motion { y, x, v_y: theta.sin(), v_x: theta.cos() };
        }
        out.frames.clear();
        out.frames.resize(frames * FRAME_PIXELS, 0);
        out.latents.resize_with(frames, FrameLatent::default);
        for (t, (canvas, latent)) in out.frames.chunks_exact_mut(FRAME_PIXELS).zip(&mut out.latents).enumerate() {
            debug_assert!(t < frames);
            latent.positions.clear();
            latent.velocity_signs.clear();
            for (m, digit) in motion.iter_mut().zip(&out.digits) {
                m.advance();
                let (top, left) = m.top_left();
                latent.positions.push((top as u8, left as u8));
                latent.velocity_signs.push((sign(m.v_y), sign(m.v_x)));
                paste(canvas, self.source.image(digit.source_index), top, left, self.config.overlap);
            }
        }
    }

    /// Plays sequences `start_sequence, start_sequence + 1, ...` as one stream of frames.
    ///
    /// Each sequence is rendered once into a reused buffer; every frame then costs one copy of
    /// its 4,096 pixels and a few small vectors. The stream ends only after sequence
    /// `u64::MAX`.
    pub fn frames(&self, start_sequence: u64) -> Frames<'_> {
        Frames { generator: self, next_sequence: Some(start_sequence), current: Sequence::default(), t: 0 }
    }
}

/// The stream of [`MovingMnist::frames`].
#[derive(Debug)]
pub struct Frames<'a> {
    generator: &'a MovingMnist,
    /// The sequence to render when `current` is used up; `None` after `u64::MAX`.
    next_sequence: Option<u64>,
    current: Sequence,
    /// The next frame of `current` to yield.
    t: usize,
}

impl Iterator for Frames<'_> {
    type Item = StreamFrame;

    fn next(&mut self) -> Option<StreamFrame> {
        if self.t >= self.current.len() {
            let i = self.next_sequence?;
            self.generator.sequence_into(i, &mut self.current);
            self.next_sequence = i.checked_add(1);
            self.t = 0;
        }
        let t = self.t;
        self.t += 1;
        Some(StreamFrame {
            sequence: self.current.index,
            t,
            pixels: self.current.frame(t)?.to_vec(),
            labels: self.current.labels(),
            latent: self.current.latents[t].clone(),
        })
    }
}

/// One digit's trajectory state in normalized free-range coordinates.
#[derive(Clone, Copy, Debug, Default)]
struct Motion {
    y: f64,
    x: f64,
    v_y: f64,
    v_x: f64,
}

impl Motion {
    /// One frame of the Srivastava update: step, then clamp-and-reflect x, then y.
    fn advance(&mut self) {
        // Written as separate multiply and add (never `mul_add`) to round as NumPy does.
        self.y += self.v_y * STEP;
        self.x += self.v_x * STEP;
        // Clamp to the wall and flip the component; the overshoot is not mirrored (MOVING_MNIST.md §2.1).
        if self.x <= 0.0 {
            self.x = 0.0;
            self.v_x = -self.v_x;
        }
        if self.x >= 1.0 {
            self.x = 1.0;
            self.v_x = -self.v_x;
        }
        if self.y <= 0.0 {
            self.y = 0.0;
            self.v_y = -self.v_y;
        }
        if self.y >= 1.0 {
            self.y = 1.0;
            self.v_y = -self.v_y;
        }
    }

    /// `(top, left)` in pixels: truncation, as `astype(np.int32)`; in `0..=36`.
    fn top_left(&self) -> (usize, usize) {
        ((RANGE * self.y) as usize, (RANGE * self.x) as usize)
    }
}

fn sign(v: f64) -> i8 {
    if v > 0.0 {
        1
    } else if v < 0.0 {
        -1
    } else {
        0
    }
}

/// Combines a 28x28 digit into the canvas with its top-left corner at `(top, left)`.
fn paste(canvas: &mut [u8], digit: &[u8], top: usize, left: usize, overlap: Overlap) {
    debug_assert!(top + DIGIT <= CANVAS && left + DIGIT <= CANVAS);
    for (r, src) in digit.chunks_exact(DIGIT).enumerate() {
        let start = (top + r) * CANVAS + left;
        let dst = &mut canvas[start..start + DIGIT];
        match overlap {
            Overlap::Max => dst.iter_mut().zip(src).for_each(|(d, &s)| *d = (*d).max(s)),
            Overlap::SumClip => dst.iter_mut().zip(src).for_each(|(d, &s)| *d = d.saturating_add(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_check_values() {
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220a8397b1dcdaf);
        assert_eq!(rng.next_u64(), 0x6e789e6aa1b965f4);
        let u = SplitMix64::new(0).uniform_f64();
        assert_eq!(u, (0xe220a8397b1dcdafu64 >> 11) as f64 / (1u64 << 53) as f64);
    }

    /// A source of 10 distinct synthetic digits: digit `k` is a filled square of value 20k+50.
    fn synthetic() -> Split {
        let mut images = vec![0u8; 10 * PIXELS];
        for (k, img) in images.chunks_exact_mut(PIXELS).enumerate() {
            for r in 4..24 {
                img[r * DIGIT + 4..r * DIGIT + 24].fill(20 * k as u8 + 50);
            }
        }
        Split { images, labels: (0..10).collect() }
    }

    #[test]
    fn positions_stay_in_range_and_move_at_most_one_step() {
        let gen = MovingMnistConfig { frames_per_sequence: 200, ..MovingMnistConfig::new(MovingSplit::Train) }
            .build_from(synthetic())
            .unwrap();
        for i in 0..50 {
            let seq = gen.sequence(i);
            for w in seq.latents.windows(2) {
                for (a, b) in w[0].positions.iter().zip(&w[1].positions) {
                    assert!(b.0 <= 36 && b.1 <= 36);
                    // 3.6 px per frame, plus up to one pixel of truncation.
                    assert!((a.0 as i32 - b.0 as i32).abs() <= 5 && (a.1 as i32 - b.1 as i32).abs() <= 5);
                }
            }
        }
    }

    #[test]
    fn max_and_sum_clip_agree_where_digits_do_not_overlap() {
        let config = MovingMnistConfig::new(MovingSplit::Test);
        let max = config.build_from(synthetic()).unwrap().sequence(3);
        let sum =
            MovingMnistConfig { overlap: Overlap::SumClip, ..config }.build_from(synthetic()).unwrap().sequence(3);
        for (a, b) in max.frames.iter().zip(&sum.frames) {
            assert!(a <= b);
        }
        assert_eq!(max.latents, sum.latents);
    }

    #[test]
    fn bad_settings_and_sources_are_errors() {
        let config = MovingMnistConfig::new(MovingSplit::Train);
        let err = MovingMnistConfig { num_digits: 3, ..config }.build_from(synthetic()).unwrap_err();
        assert!(matches!(err, MovingMnistError::Digits { got: 3 }), "{err}");
        let err = MovingMnistConfig { num_digits: 0, ..config }.build_from(synthetic()).unwrap_err();
        assert!(matches!(err, MovingMnistError::Digits { got: 0 }), "{err}");
        let err = MovingMnistConfig { frames_per_sequence: 0, ..config }.build_from(synthetic()).unwrap_err();
        assert!(matches!(err, MovingMnistError::NoFrames), "{err}");
        assert!(config.build_from(Split::default()).is_err());
        let mut short = synthetic();
        short.images.pop();
        let err = config.build_from(short).unwrap_err().to_string();
        assert!(err.contains("7839 image bytes"), "{err}");
    }

    #[test]
    fn the_last_sequence_ends_the_stream() {
        let gen = MovingMnistConfig::new(MovingSplit::Train).build_from(synthetic()).unwrap();
        let frames: Vec<StreamFrame> = gen.frames(u64::MAX - 1).collect();
        assert_eq!(frames.len(), 2 * FRAMES_PER_SEQUENCE);
        assert_eq!(frames.last().map(|f| (f.sequence, f.t)), Some((u64::MAX, FRAMES_PER_SEQUENCE - 1)));
    }
}
