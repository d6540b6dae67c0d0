//! The checkpoint barrier: at an epoch marker every stage leaves its state here, on its own
//! thread, before it forwards the marker. With a shard store ([`crate::checkpoint::ShardStore`])
//! the stage writes its own shard file there and then, and leaves only the shard's name and
//! hash; without one (tests, `ffstream eval`), a copy of the state. The marker reaches the sink
//! after every stage has passed it, so the sink then finds one consistent deposit per stage. No
//! stage's weights travel down another stage's edges, and a remote stage would write its shard
//! on its own host the same way.

use std::sync::Mutex;

use crate::checkpoint::{Shard, ShardStore};
use crate::error::CheckpointError;
use crate::packet::StageState;

/// What a stage left at the barrier.
#[derive(Debug)]
enum Left {
    State(StageState),
    Shard(Shard),
}

/// Why the barrier has no deposit of an epoch for a stage.
#[derive(Debug, thiserror::Error)]
pub enum BarrierError {
    /// The stage passed the marker without leaving anything.
    #[error("stage `{0}` left no state at the end of the epoch")]
    Missing(String),
    /// The stage could not write its shard.
    #[error("stage `{stage}` could not write its checkpoint shard: {source}")]
    Shard {
        /// The stage.
        stage: String,
        /// What failed.
        source: CheckpointError,
    },
}

type Slot = Option<(u32, Result<Left, CheckpointError>)>;

/// One slot per stage, each written by its own stage only.
#[derive(Debug)]
pub struct Barrier {
    slots: Mutex<Vec<Slot>>,
    store: Option<ShardStore>,
}

impl Barrier {
    /// A barrier for `stages` stages; with a store, each stage writes its shard there.
    pub fn new(stages: usize, store: Option<ShardStore>) -> Barrier {
        Barrier { slots: Mutex::new((0..stages).map(|_| None).collect()), store }
    }

    /// Stage `k` leaves its state at the end of `epoch` (writing its shard first, on the
    /// calling thread, when the barrier has a store).
    pub fn deposit(&self, k: usize, epoch: u32, state: StageState) {
        let left = match &self.store {
            Some(store) => store.write(epoch, &state).map(Left::Shard),
            None => Ok(Left::State(state)),
        };
        // A poisoned lock means another stage panicked; the run stops with that error anyway.
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get_mut(k) {
            *slot = Some((epoch, left));
        }
    }

    /// Every stage's deposit of `epoch`, in stage order: the states left in memory and the
    /// shards written.
    pub fn take(&self, epoch: u32, names: &[String]) -> Result<(Vec<StageState>, Vec<Shard>), BarrierError> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let (mut states, mut shards) = (Vec::new(), Vec::new());
        for (k, slot) in slots.iter_mut().enumerate() {
            let name = || names.get(k).cloned().unwrap_or_else(|| format!("stage {}", k + 1));
            match slot.take() {
                Some((e, Ok(Left::State(state)))) if e == epoch => states.push(state),
                Some((e, Ok(Left::Shard(shard)))) if e == epoch => shards.push(shard),
                Some((e, Err(source))) if e == epoch => return Err(BarrierError::Shard { stage: name(), source }),
                _ => return Err(BarrierError::Missing(name())),
            }
        }
        Ok((states, shards))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(name: &str) -> StageState {
        StageState { stage: name.into(), tensors: vec![(format!("{name}.bias"), vec![2], vec![0.5, -1.0])] }
    }

    #[test]
    fn a_stage_that_left_no_state_for_the_epoch_is_named() {
        let names = vec!["layer1".to_string(), "layer2".to_string()];
        let barrier = Barrier::new(2, None);
        barrier.deposit(0, 3, state("layer1"));
        barrier.deposit(1, 2, state("layer2"));
        let err = barrier.take(3, &names).unwrap_err();
        assert!(matches!(&err, BarrierError::Missing(s) if s == "layer2"), "{err}");
        barrier.deposit(0, 4, state("layer1"));
        barrier.deposit(1, 4, state("layer2"));
        let (states, shards) = barrier.take(4, &names).unwrap();
        assert_eq!(states.iter().map(|s| s.stage.as_str()).collect::<Vec<_>>(), ["layer1", "layer2"]);
        assert!(shards.is_empty());
    }

    #[test]
    fn with_a_store_each_stage_writes_its_own_shard() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["layer1".to_string(), "layer2".to_string()];
        let barrier = Barrier::new(2, Some(ShardStore::new(dir.path())));
        // Each from its own thread, as the stages do.
        std::thread::scope(|s| {
            for (k, name) in names.iter().enumerate() {
                let barrier = &barrier;
                s.spawn(move || barrier.deposit(k, 1, state(name)));
            }
        });
        let (states, shards) = barrier.take(1, &names).unwrap();
        assert!(states.is_empty());
        assert_eq!(
            shards.iter().map(|s| s.file.as_str()).collect::<Vec<_>>(),
            ["checkpoint/layer1.e1.safetensors", "checkpoint/layer2.e1.safetensors"]
        );
        assert!(shards.iter().all(|s| dir.path().join(&s.file).is_file()));
    }
}
