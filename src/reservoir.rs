//! A replay memory as a reservoir sample: a bounded, uniform sample of everything offered.
//!
//! Vitter's algorithm R: the first `capacity` items are kept; the n-th item after that replaces
//! a random slot with probability `capacity / n`. Every item offered so far is then in the
//! memory with the same probability, whatever the stream's length, and the memory never grows.
//! Sleep phases and negatives draw from it: its size is the only storage they use.

use crate::rng::Rng;

/// A uniform sample of at most `capacity` of the items offered.
#[derive(Clone, Debug)]
pub struct Reservoir<T> {
    capacity: usize,
    items: Vec<T>,
    offered: usize,
}

impl<T> Reservoir<T> {
    /// An empty memory of `capacity` items (0: it keeps nothing).
    pub fn new(capacity: usize) -> Reservoir<T> {
        Reservoir { capacity, items: Vec::new(), offered: 0 }
    }

    /// Forgets everything (a new epoch).
    pub fn clear(&mut self) {
        self.items.clear();
        self.offered = 0;
    }

    /// Offers one item; it is kept, replaces a random kept one, or is dropped.
    pub fn offer(&mut self, item: T, rng: &mut Rng) {
        self.offered += 1;
        if self.items.len() < self.capacity {
            self.items.push(item);
        } else if self.capacity > 0 {
            let slot = rng.below(self.offered);
            if slot < self.capacity {
                self.items[slot] = item;
            }
        }
    }

    /// The items kept.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// Number of items kept.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_kept_with_the_same_probability() {
        let mut kept = [0usize; 20];
        let mut rng = Rng::new(9);
        for _ in 0..4000 {
            let mut r = Reservoir::new(5);
            for i in 0..20 {
                r.offer(i, &mut rng);
            }
            assert_eq!(r.len(), 5);
            r.items().iter().for_each(|&i| kept[i] += 1);
        }
        // Expected 4000 * 5 / 20 = 1000 each.
        assert!(kept.iter().all(|&k| (850..1150).contains(&k)), "{kept:?}");
    }
}
