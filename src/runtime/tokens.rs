//! Core tokens: at most N stages compute at once, each packet to its end.
//!
//! With more stage threads than cores (four stages on two cores), the OS time-slices the
//! stages: a 40 ms product is cut into scheduler slices, and each switch brings another stage's
//! weights and packing buffers through the caches. With tokens, a stage takes one before it
//! computes a packet and gives it back after, so N threads compute and the others wait
//! without spinning; the stage that has waited longest goes next. Only compute holds a token,
//! never a send or a receive, so a stage blocked on a full queue cannot hold up the stage
//! that would drain it. The results are the same with or without: every stage still sees its
//! packets in stream order.

use std::sync::{Condvar, Mutex};

/// A fair counting semaphore of core tokens.
#[derive(Debug)]
pub struct CoreTokens {
    state: Mutex<Queue>,
    turn: Condvar,
}

#[derive(Debug)]
struct Queue {
    free: usize,
    /// The next ticket to hand out, and the ticket whose turn it is: first come, first served.
    next: u64,
    serving: u64,
}

/// A held token, given back when dropped.
pub struct Token<'a> {
    tokens: &'a CoreTokens,
}

impl CoreTokens {
    /// `n` tokens (at least 1).
    pub fn new(n: usize) -> CoreTokens {
        CoreTokens { state: Mutex::new(Queue { free: n.max(1), next: 0, serving: 0 }), turn: Condvar::new() }
    }

    /// Waits for a token, in arrival order.
    pub fn take(&self) -> Token<'_> {
        // A poisoned lock means a stage panicked while counting; the count itself is intact.
        let mut q = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = q.next;
        q.next += 1;
        while !(q.serving == ticket && q.free > 0) {
            q = self.turn.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        q.serving += 1;
        q.free -= 1;
        drop(q);
        // The next ticket may be servable now too (another token is free).
        self.turn.notify_all();
        Token { tokens: self }
    }

    /// Tokens free now.
    pub fn free(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).free
    }
}

impl Drop for Token<'_> {
    fn drop(&mut self) {
        let mut q = self.tokens.state.lock().unwrap_or_else(|e| e.into_inner());
        q.free += 1;
        drop(q);
        self.tokens.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn never_more_holders_than_tokens_and_everyone_gets_a_turn() {
        let tokens = CoreTokens::new(2);
        let (holding, most, done) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..5 {
                s.spawn(|| {
                    for _ in 0..20 {
                        let _token = tokens.take();
                        let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(200));
                        holding.fetch_sub(1, Ordering::SeqCst);
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        assert_eq!(done.load(Ordering::SeqCst), 5);
        assert_eq!(most.load(Ordering::SeqCst), 2);
        assert_eq!(tokens.free(), 2);
    }
}
