//! `weir schema`: the JSON Schema of the pipeline format, for editors.

use std::process::ExitCode;

pub(crate) fn run() -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(&weir_model::schema())?);
    Ok(ExitCode::SUCCESS)
}
