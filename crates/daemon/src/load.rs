//! What all runs of one daemon hold together: attempts in flight and GPUs,
//! so `max_running` and the host's GPUs bound the daemon as a whole.
//!
//! **Invariant:** an attempt's share is taken when it is started and given
//! back exactly once, when its exit is reported or its run's loop ends.

use std::sync::Mutex;
use tokio::sync::watch;
use weir_engine::Capacity;

/// Attempts in flight and GPUs held, across every run driven with the same
/// [`Options`](crate::Options), so the bounds hold for the daemon as a whole. A run that
/// waits for a slot or a GPU is woken when another run frees one.
#[derive(Debug)]
pub struct Usage {
    state: Mutex<UsageState>,
    pub(crate) freed: watch::Sender<u64>,
}

impl Default for Usage {
    fn default() -> Usage {
        Usage {
            state: Mutex::default(),
            freed: watch::channel(0).0,
        }
    }
}

#[derive(Debug, Default)]
struct UsageState {
    running: usize,
    gpus: Vec<(String, String)>,
}

impl Usage {
    fn lock(&self) -> std::sync::MutexGuard<'_, UsageState> {
        // A panic while holding this lock leaves plain counters behind.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn take(&self, run: &str, gpus: &[String]) {
        let mut state = self.lock();
        state.running += 1;
        state
            .gpus
            .extend(gpus.iter().map(|g| (run.to_owned(), g.clone())));
    }

    pub(crate) fn release(&self, run: &str, gpus: &[String]) {
        {
            let mut state = self.lock();
            state.running = state.running.saturating_sub(1);
            state.gpus.retain(|(r, g)| !(r == run && gpus.contains(g)));
        }
        self.freed.send_modify(|generation| *generation += 1);
    }

    /// What run `run` may use now: the free slots of `max_running`, and
    /// `gpus` with those other runs hold.
    pub(crate) fn capacity(&self, max_running: usize, gpus: &[String], run: &str) -> Capacity {
        let state = self.lock();
        Capacity {
            slots: max_running.saturating_sub(state.running),
            gpus: gpus.to_vec(),
            busy_gpus: state
                .gpus
                .iter()
                .filter(|(r, _)| r != run)
                .map(|(_, g)| g.clone())
                .collect(),
        }
    }

    /// Attempts in flight across all runs.
    pub fn running(&self) -> usize {
        self.lock().running
    }

    /// GPUs held across all runs.
    pub fn gpus_held(&self) -> usize {
        self.lock().gpus.len()
    }
}
