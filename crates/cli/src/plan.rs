//! `weir plan FILE [--param k=v]…`: a dry run of one pipeline.

use crate::output::Output;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `weir plan`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The pipeline file.
    file: PathBuf,
    /// A param value, `name=value`; repeat for several.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// How to print the plan.
    #[arg(long, value_enum, default_value_t)]
    output: Output,
}

pub(crate) fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got '{text}'")),
    }
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let shown = args.file.display();
    let Some((pipeline, _)) = crate::files::load_pipeline(&args.file)? else {
        return Ok(ExitCode::FAILURE);
    };
    match weir_model::plan(&pipeline, &args.params) {
        Ok(plan) => {
            match args.output {
                Output::Table => print!("{plan}"),
                Output::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in errors {
                eprintln!("{shown}: {e}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
