//! The checkpoint barrier: at an epoch marker every stage leaves a copy of its state here, on
//! its own thread, before it forwards the marker. The marker reaches the sink after every stage
//! has passed it, so the sink then finds one consistent state per stage. No stage's weights
//! travel down another stage's edges, and a remote stage would leave its copy in its own
//! place (its host's shard) the same way.

use std::sync::Mutex;

use crate::packet::StageState;

/// One slot per stage, each written by its own stage only.
#[derive(Debug)]
pub struct Barrier {
    slots: Mutex<Vec<Option<(u32, StageState)>>>,
}

impl Barrier {
    /// A barrier for `stages` stages.
    pub fn new(stages: usize) -> Barrier {
        Barrier { slots: Mutex::new(vec![None; stages]) }
    }

    /// Stage `k` leaves its state at the end of `epoch`.
    pub fn deposit(&self, k: usize, epoch: u32, state: StageState) {
        // A poisoned lock means another stage panicked; the run stops with that error anyway.
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get_mut(k) {
            *slot = Some((epoch, state));
        }
    }

    /// Every stage's state of `epoch`, in stage order; the name of a stage that left none.
    pub fn take(&self, epoch: u32, names: &[String]) -> Result<Vec<StageState>, String> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut states = Vec::with_capacity(slots.len());
        for (k, slot) in slots.iter_mut().enumerate() {
            match slot.take() {
                Some((e, state)) if e == epoch => states.push(state),
                _ => return Err(names.get(k).cloned().unwrap_or_else(|| format!("stage {}", k + 1))),
            }
        }
        Ok(states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_that_left_no_state_for_the_epoch_is_named() {
        let names = vec!["layer1".to_string(), "layer2".to_string()];
        let barrier = Barrier::new(2);
        barrier.deposit(0, 3, StageState { stage: "layer1".into(), tensors: Vec::new() });
        barrier.deposit(1, 2, StageState { stage: "layer2".into(), tensors: Vec::new() });
        assert_eq!(barrier.take(3, &names).unwrap_err(), "layer2");
        barrier.deposit(0, 4, StageState { stage: "layer1".into(), tensors: Vec::new() });
        barrier.deposit(1, 4, StageState { stage: "layer2".into(), tensors: Vec::new() });
        let states = barrier.take(4, &names).unwrap();
        assert_eq!(states.iter().map(|s| s.stage.as_str()).collect::<Vec<_>>(), ["layer1", "layer2"]);
    }
}
