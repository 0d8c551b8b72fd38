//! The `weir` binary run as a process, as a user runs it; and the tidy
//! checks that keep the workspace's rules.

mod plan;
mod run;
mod schema;
mod serve;
mod tidy;
mod validate;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root: commands run there, as a user in their repository.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `weir` with `args` in the workspace root.
fn weir(args: &[&str]) -> Output {
    weir_in(&root(), args)
}

/// Runs `weir` with `args` in `dir`.
fn weir_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("weir runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The audit entries of the store in `data`, and whether they verify with
/// the key kept there.
fn audit_of(data: &Path) -> Vec<weir_store::AuditEntry> {
    let entries = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let url = format!("sqlite://{}/weir.db", data.display());
            let store = weir_store::Store::connect(&url).await.expect("store");
            store.audit_entries(0, 1000).await.expect("audit")
        });
    let key = weir_store::signing_key(data).expect("key");
    weir_store::verify(&entries, &key.verifying_key()).expect("the chain verifies");
    entries
}
