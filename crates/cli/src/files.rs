//! Reading one pipeline file, for the commands that take a file (`weir run`,
//! `weir plan`); folders are scanned by `weir_daemon::scan`, which `weir
//! validate` and `weir serve` share.

use std::path::Path;

/// Reads and validates one pipeline file, printing its diagnostics as
/// `path:line:col: message`; `None` when it has errors.
pub(crate) fn load_pipeline(path: &Path) -> anyhow::Result<Option<(weir_model::Pipeline, String)>> {
    use anyhow::Context as _;
    let shown = path.display();
    let source = std::fs::read_to_string(path).with_context(|| format!("cannot read {shown}"))?;
    let validated = weir_model::validate(&source);
    for d in &validated.diagnostics {
        eprintln!("{shown}:{d}");
    }
    Ok(validated.pipeline.map(|p| (p, source)))
}
