//! `weir run FILE [--param k=v]…`: one pipeline, now, in this process, with
//! the same engine and store as the daemon.

use crate::local::{StoreArgs, ctrl_c, finish, progress, runtime};
use crate::plan::parse_param;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `weir run`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The pipeline file.
    file: PathBuf,
    /// A param value, `name=value`; repeat for several.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Fail the run if it has not finished after this long (`30m`, `2h`).
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<weir_model::units::Duration>,
    #[command(flatten)]
    store: StoreArgs,
}

fn parse_duration(text: &str) -> Result<weir_model::units::Duration, String> {
    weir_model::units::Duration::parse(text)
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let shown = args.file.display();
    let Some((pipeline, source)) = crate::files::load_pipeline(&args.file)? else {
        return Ok(ExitCode::FAILURE);
    };
    runtime()?.block_on(async {
        let settings = args.store.settings()?;
        let options = settings.options(&pipeline).await?;
        let store = settings.store().await?;
        let hash = store.save_pipeline(&pipeline.name.value, &source).await?;
        let id = uuid::Uuid::now_v7().simple().to_string();
        let now = weir_daemon::now();
        let mut run = match weir_engine::new_run(
            &pipeline,
            &id,
            "manual",
            &args.params,
            serde_json::Value::Null,
            store.registry_view().await?,
            now,
        ) {
            Ok(run) => run,
            Err(errors) => {
                for e in errors {
                    eprintln!("{shown}: {e}");
                }
                return Ok(ExitCode::FAILURE);
            }
        };
        if let Some(timeout) = args.timeout {
            run.deadline = chrono::Duration::from_std(timeout.get())
                .ok()
                .map(|t| now + t);
        }
        store.create_run(&run, &hash).await?;
        if settings.output == crate::output::Output::Table {
            println!("run {id} of {}", pipeline.name.value);
        }
        let finished = weir_daemon::drive(
            &store,
            &pipeline,
            &id,
            &options,
            ctrl_c(),
            progress(settings.output),
        )
        .await?;
        store.close().await;
        finish(&finished, settings.output)
    })
}
