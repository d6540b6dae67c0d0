//! Denormal floats flushed to zero on the threads that compute (x86's FTZ and DAZ bits).
//!
//! Why: on Intel cores an instruction that reads or makes a denormal (a value under 1.2e-38)
//! takes a microcode assist, of the order of a hundred ordinary multiply-adds. Measured on the
//! Xeon (Emerald Rapids), one 784->2000 FF stage alone on the bench's packet: 44 ms a packet over
//! its first ten packets, still 14-21 ms after 150; with denormals flushed, 14-16 ms from the
//! first packet. That is why `ffstream bench` put that stage at 30% of the peak on the Xeon and
//! at 60-80% on the EPYCs, whose cores take no such penalty. Denormals also come in training:
//! a weight whose input is always zero (an MNIST border pixel) sees its momentum decay towards
//! zero through the denormal range.
//!
//! A value that small carries nothing a net learns from. Still, it is a deviation from IEEE
//! arithmetic (and from the paper's Matlab code, which keeps gradual underflow): a product that
//! would be a denormal is 0 here.
//!
//! The mode is per thread, and a new thread starts with its creator's: the binary sets it once
//! at start, [`crate::runtime`] for the length of a run (its stage threads inherit it), and a
//! stage's own pool on each of its workers.

/// The MXCSR bits: flush results to zero (FTZ, bit 15) and read inputs as zero (DAZ, bit 6).
#[cfg(target_arch = "x86_64")]
const FLUSH: u32 = (1 << 15) | (1 << 6);

/// Flushes denormals on this thread from now on (and on the threads it starts after this).
/// Does nothing on other architectures.
pub fn flush_on_this_thread() {
    #[cfg(target_arch = "x86_64")]
    set_csr(csr() | FLUSH);
}

/// Whether this thread flushes denormals.
pub fn flushing() -> bool {
    #[cfg(target_arch = "x86_64")]
    return csr() & FLUSH == FLUSH;
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Denormals flushed on this thread until the guard drops, which restores the mode it found:
/// a library call leaves its caller's thread as it was.
#[must_use = "the mode is restored when the guard drops"]
pub struct Flushing {
    #[cfg(target_arch = "x86_64")]
    previous: u32,
}

impl Flushing {
    /// Starts flushing on this thread.
    pub fn start() -> Flushing {
        #[cfg(target_arch = "x86_64")]
        {
            let previous = csr();
            set_csr(previous | FLUSH);
            Flushing { previous }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Flushing {}
    }
}

impl Drop for Flushing {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        set_csr(self.previous);
    }
}

// `_mm_getcsr`/`_mm_setcsr` are deprecated in favour of inline assembly, which is what they were.
#[cfg(target_arch = "x86_64")]
fn csr() -> u32 {
    let mut value: u32 = 0;
    // SAFETY: stmxcsr writes 4 bytes to the given address, a live local.
    unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut value, options(nostack, preserves_flags)) };
    value
}

#[cfg(target_arch = "x86_64")]
fn set_csr(value: u32) {
    // SAFETY: ldmxcsr reads 4 bytes from a live local. The values written are the thread's own
    // with FTZ/DAZ set or restored: no reserved bit is set (that would fault), no exception is
    // unmasked and the rounding mode is left alone.
    unsafe { std::arch::asm!("ldmxcsr [{}]", in(reg) &value, options(nostack, preserves_flags, readonly)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn guard_flushes_inherits_and_restores() {
        let tiny = std::hint::black_box(1.0e-30f32);
        let scale = std::hint::black_box(1.0e-10f32);
        // Run on a fresh thread: the test harness's thread keeps whatever mode it had.
        std::thread::spawn(move || {
            assert!(!flushing());
            assert!(tiny * scale > 0.0, "without the mode a denormal result stays");
            {
                let _mode = Flushing::start();
                assert!(flushing());
                assert_eq!(std::hint::black_box(tiny * scale), 0.0, "a denormal result is flushed");
                let child = std::thread::spawn(flushing).join().unwrap();
                assert!(child, "a thread started under the mode has it");
            }
            assert!(!flushing(), "the guard restores the mode it found");
            assert!(tiny * scale > 0.0);
        })
        .join()
        .unwrap();
    }
}
