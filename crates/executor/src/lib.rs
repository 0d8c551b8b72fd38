//! weir's executors: they run one attempt of a container step under the
//! step contract (DESIGN.md §2) and report its outcome.
//!
//! `contract.rs` holds what every executor hands a step (the `WEIR_*`
//! environment, the work and out folders, `metrics.json` and
//! `outputs.json`); `mask.rs` hides secret values in logs; `process.rs`
//! runs a step as a child process group on the host. Not here: SQL, HTTP,
//! or deciding what runs next (that is the engine's).

mod contract;
mod docker;
mod gpu;
mod mask;
mod process;

pub use contract::{Attempt, OUTPUT_LIMIT, Object, collect, read_outputs};
pub use docker::{DockerExecutor, Found, container_name};
pub use gpu::{Gpu, NVIDIA_SMI_ARGS, inventory, parse_query};
pub use mask::Masker;
pub use process::{kill_leftover, run_process};
