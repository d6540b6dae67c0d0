//! Counts heap allocations, for `ffstream bench`'s `allocs_per_frame`: the binary installs
//! [`Counting`] as its global allocator (one relaxed atomic add per allocation on top of the
//! system allocator); a program that does not sees [`installed`] false and no counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's allocations: a pipeline element records its own thread's per packet
    /// ([`crate::metrics::StageStats::record`]), so the bench can say which element allocates.
    /// A const-initialized `Cell` needs no allocation and no destructor, so the allocator may
    /// touch it.
    static THIS_THREAD: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn count() {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    // `try_with`: a thread being torn down still allocates; it is counted globally only.
    let _ = THIS_THREAD.try_with(|n| n.set(n.get() + 1));
}

/// The system allocator, counting every allocation and reallocation.
pub struct Counting;

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as for `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Allocations so far, on every thread.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Allocations so far on this thread (0 where the program does not count).
pub fn thread_allocations() -> u64 {
    THIS_THREAD.try_with(|n| n.get()).unwrap_or(0)
}

/// Whether this program counts (its global allocator is [`Counting`]).
pub fn installed() -> bool {
    let before = allocations();
    let probe = std::hint::black_box(Box::new(0u64));
    drop(probe);
    allocations() != before
}
