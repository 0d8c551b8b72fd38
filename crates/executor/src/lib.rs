//! weir's executors: they run one attempt of a container step under the
//! step contract (DESIGN.md §2) and report how it exited.
//!
//! `executor.rs` is the seam: the [`Executor`] trait with its own
//! [`Launch`], [`AttemptIo`], [`Exit`], [`Found`] and [`Error`].
//! `contract.rs` holds what every executor hands a step (the `WEIR_*`
//! environment, the work and out folders, `metrics.json` and
//! `outputs.json`); `mask.rs` hides secret values in logs; `docker.rs` and
//! `process.rs` are the two executors (`supervise.rs` keeps a process
//! step's output and exit where a restarted weir finds them); `gpu.rs` lists the host's GPUs.
//! Not here: SQL, HTTP, pipelines, or deciding what runs next (that is the
//! engine's): this crate depends on no other of weir's.

mod contract;
mod docker;
mod executor;
mod gpu;
mod mask;
mod process;
mod supervise;

pub use contract::{OUTPUT_LIMIT, OutputError, collect, read_outputs};
pub use docker::{DockerExecutor, container_name};
pub use executor::{AttemptIo, AttemptKey, Error, Executor, Exit, Found, Launch, Object, Pull};
pub use gpu::{Gpu, NVIDIA_SMI_ARGS, inventory, parse_query};
pub use mask::Masker;
pub use process::ProcessExecutor;
pub use supervise::supervise;
