//! Buffers that come back: a packet's arrays and vectors return here when the sink is done
//! with it, and the head and the stages take them again, so a stream in steady state makes no
//! heap allocation per packet (issue 11).
//!
//! Packets flow one way (head → stages → sink), so a buffer freed at the sink is needed at the
//! head, on another thread: a stage cannot keep what it sends on. The pools are process-wide,
//! one lock each, taken a few times per packet (a packet carries 100s of rows, so the locks cost
//! nothing measurable). A taker gets the smallest free buffer that holds what it asks for, and
//! none more than twice that: each size keeps its own buffers in circulation.
//!
//! Only buffers travel through here, never weights: a stage's parameters stay its own.
//! Contents are whatever the buffer held before ([`take`], [`array`]): every taker writes each
//! element, so clearing first would be a second pass over the memory; [`zeroed`] clears.
//! The pools are bounded (buffers and bytes): past the bounds the longest-kept buffers are freed.
//! Every run empties them at its end ([`clear`]).

use std::sync::Mutex;

use ndarray::Array2;

use crate::packet::{Packet, Purpose, RowBuffers};

/// Free buffers of one element type.
struct Pool<T> {
    free: Mutex<Vec<Vec<T>>>,
}

/// At most this many free buffers a pool: more than a deep pipeline has in flight.
const MAX_BUFFERS: usize = 256;
/// At most this many bytes of free buffers a pool (evaluation packets are the largest: 1,100
/// rows of 2,000 units are 8.8 MB).
const MAX_BYTES: usize = 512 << 20;

impl<T: Copy + Default> Pool<T> {
    const fn new() -> Pool<T> {
        Pool { free: Mutex::new(Vec::new()) }
    }

    /// A buffer of `len` elements (stale contents), the smallest free one that holds them (at
    /// most twice as large), or a new one.
    fn take(&self, len: usize) -> Vec<T> {
        let found = {
            // A poisoned pool is only a cache: its buffers are still whole.
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            let best = free
                .iter()
                .enumerate()
                // Not more than twice as large: a small request must not take a large buffer
                // that a large one will need next (it would allocate instead).
                .filter(|(_, v)| v.capacity() >= len && v.capacity() <= len.saturating_mul(2).max(64))
                .min_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i);
            best.map(|i| free.swap_remove(i))
        };
        match found {
            Some(mut v) => {
                if v.len() >= len {
                    v.truncate(len);
                } else {
                    v.resize(len, T::default());
                }
                v
            }
            None => vec![T::default(); len],
        }
    }

    /// Keeps `v` for a later [`Pool::take`]; where that passes the bounds, the longest-kept
    /// buffers are freed first (a size the run no longer asks for must not block the pool).
    fn give(&self, v: Vec<T>) {
        let bytes = |v: &Vec<T>| v.capacity() * std::mem::size_of::<T>();
        if v.capacity() == 0 || bytes(&v) > MAX_BYTES {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let mut held: usize = free.iter().map(bytes).sum();
        while free.len() >= MAX_BUFFERS || held + bytes(&v) > MAX_BYTES {
            held -= bytes(&free.remove(0));
        }
        push_within(&mut free, v, MAX_BUFFERS);
    }
}

impl<T> Pool<T> {
    /// Frees every buffer the pool holds.
    fn clear(&self) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Pushes `item` onto a free list of at most `bound` entries (the caller keeps it below), the
/// list growing once to the bound, not by doubling on the way: each growth would allocate.
fn push_within<T>(list: &mut Vec<T>, item: T, bound: usize) {
    if list.capacity() == list.len() {
        let room = bound - list.len();
        list.reserve_exact(room);
    }
    list.push(item);
}

static F32: Pool<f32> = Pool::new();
static U32: Pool<u32> = Pool::new();
static U8: Pool<u8> = Pool::new();
/// The vectors of finished packets, with their capacity.
static SHELLS: Mutex<Vec<RowBuffers>> = Mutex::new(Vec::new());
const MAX_SHELLS: usize = 64;
/// Stages a new packet has room for in its per-stage lists before they grow.
const STAGES: usize = 8;

/// Frees what the pools hold: a finished run's shapes are not the next one's, and memory
/// should not stay held after a run (runtime::run calls it at the end).
pub fn clear() {
    F32.clear();
    U32.clear();
    U8.clear();
    SHELLS.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// `len` floats, stale contents.
pub fn take(len: usize) -> Vec<f32> {
    F32.take(len)
}

/// `len` zeros.
pub fn zeroed(len: usize) -> Vec<f32> {
    let mut v = F32.take(len);
    v.fill(0.0);
    v
}

/// Gives floats back.
pub fn give(v: Vec<f32>) {
    F32.give(v)
}

/// A `shape` array, stale contents.
pub fn array(shape: (usize, usize)) -> Array2<f32> {
    shaped(take(shape.0 * shape.1), shape)
}

/// A `shape` array of zeros.
pub fn zeros(shape: (usize, usize)) -> Array2<f32> {
    shaped(zeroed(shape.0 * shape.1), shape)
}

/// `values` as a `shape` array; every caller passes exactly the shape's elements.
fn shaped(values: Vec<f32>, shape: (usize, usize)) -> Array2<f32> {
    // Invariant: `values` holds exactly `shape`'s elements (the callers above).
    Array2::from_shape_vec(shape, values).expect("a buffer of the shape's length")
}

/// Gives an array's allocation back.
pub fn give_array(a: Array2<f32>) {
    give(a.into_raw_vec_and_offset().0)
}

/// `buffer`'s allocation as a `shape` array, reused when it holds enough, else one from
/// the pool: a stage recycles the arrays it has finished with instead of allocating
/// per packet. The values are stale (what the buffer held): every caller writes each element,
/// so clearing them first would be a second pass over the array on every packet.
pub fn reshaped(buffer: Array2<f32>, shape: (usize, usize)) -> Array2<f32> {
    let len = shape.0 * shape.1;
    let (mut values, _) = buffer.into_raw_vec_and_offset();
    if values.capacity() < len {
        // Too small (a layer wider than its input): the buffer goes to the pool, whose larger
        // ones came back from the sink.
        give(values);
        return array(shape);
    }
    values.resize(len, 0.0);
    shaped(values, shape)
}

/// `len` indices, stale contents.
pub fn take_u32(len: usize) -> Vec<u32> {
    U32.take(len)
}

/// Gives indices back.
pub fn give_u32(v: Vec<u32>) {
    U32.give(v)
}

/// `len` bytes, stale contents.
pub fn take_u8(len: usize) -> Vec<u8> {
    U8.take(len)
}

/// Gives bytes back.
pub fn give_u8(v: Vec<u8>) {
    U8.give(v)
}

/// A packet as [`Packet::new`] makes it (`x`'s rows, all positives of step 0 of 1, stamped
/// now), on a finished packet's vectors where one is free.
pub fn packet(seq: u64, epoch: u32, purpose: Purpose, x: Array2<f32>) -> Packet {
    let rows = x.nrows();
    let shell = {
        let mut shells = SHELLS.lock().unwrap_or_else(|e| e.into_inner());
        // The smallest whose row vectors hold `rows`: an evaluation packet's (10 rows an image)
        // is kept for the next evaluation packet.
        let best = shells
            .iter()
            .enumerate()
            .filter(|(_, b)| b.row_capacity() >= rows)
            .min_by_key(|(_, b)| b.row_capacity())
            .map(|(i, _)| i);
        best.map(|i| shells.swap_remove(i))
    };
    let buffers = shell.unwrap_or_else(|| {
        let mut fresh = RowBuffers::default();
        // Room for what the stages push (one entry a stage), so they do not grow it.
        fresh.reserve_stages(STAGES);
        fresh
    });
    Packet::on_buffers(buffers, seq, epoch, purpose, x)
}

/// Takes a finished packet apart: its arrays back to the pools, its vectors kept for the next
/// [`packet`].
pub fn give_packet(p: Packet) {
    let buffers = p.into_buffers(give_array, give);
    let mut shells = SHELLS.lock().unwrap_or_else(|e| e.into_inner());
    if shells.len() < MAX_SHELLS {
        push_within(&mut shells, buffers, MAX_SHELLS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taker_gets_the_smallest_free_buffer_that_fits() {
        let pool: Pool<f32> = Pool::new();
        pool.give(Vec::with_capacity(1000));
        pool.give(Vec::with_capacity(150));
        pool.give(Vec::with_capacity(10));
        let v = pool.take(100);
        assert_eq!((v.len(), v.capacity()), (100, 150));
        let big = pool.take(2000);
        assert_eq!(big.len(), 2000, "nothing free fits: a new one");
        let small = pool.take(300);
        assert!(small.capacity() < 1000, "the 1000 is kept for a request of more than 500");
        assert_eq!(pool.free.lock().unwrap().len(), 2);
    }

    #[test]
    fn a_pool_keeps_no_more_than_its_bounds() {
        let pool: Pool<u8> = Pool::new();
        for _ in 0..MAX_BUFFERS + 10 {
            pool.give(vec![1; 4]);
        }
        assert_eq!(pool.free.lock().unwrap().len(), MAX_BUFFERS);
        pool.give(vec![2; 8]);
        assert_eq!(pool.free.lock().unwrap().len(), MAX_BUFFERS);
        assert_eq!(pool.take(8), vec![2; 8], "the newest is kept, the oldest freed");
        let huge: Pool<u8> = Pool::new();
        huge.give(vec![0; MAX_BYTES / 2 + 1]);
        huge.give(vec![1; MAX_BYTES / 2 + 1]);
        let free = huge.free.lock().unwrap();
        assert_eq!((free.len(), free[0][0]), (1, 1), "the byte bound: the newest kept");
    }

    #[test]
    fn a_recycled_packet_is_a_new_packet() {
        let mut used = Packet::new(7, 3, Purpose::Test, Array2::ones((4, 3)));
        used.positives = 1;
        used.negatives = 2;
        used.neutral = 1;
        used.goodness = vec![5.0; 4];
        used.features.push(Array2::ones((1, 3)));
        used.layer_goodness.push(vec![1.0; 4]);
        used.embedded = vec![2; 4];
        used.step = 2;
        used.steps = 3;
        give_packet(used);
        let x = Array2::from_elem((2, 3), 0.5);
        let (a, b) = (packet(9, 1, Purpose::Train, x.clone()), Packet::new(9, 1, Purpose::Train, x));
        assert_eq!((a.seq, a.epoch, a.purpose, a.x.clone()), (b.seq, b.epoch, b.purpose, b.x.clone()));
        assert_eq!((a.positives, a.negatives, a.neutral, a.frames), (b.positives, b.negatives, b.neutral, b.frames));
        assert_eq!((&a.frame, &a.truth, &a.embedded, &a.goodness), (&b.frame, &b.truth, &b.embedded, &b.goodness));
        assert!(a.features.is_empty() && a.layer_goodness.is_empty());
        assert_eq!((a.step, a.steps, a.observe), (b.step, b.steps, b.observe));
    }
}
