//! `weir resume [RUN]`: drive interrupted runs of the local store to their
//! end — every unfinished one when no run is named.

use crate::local::{StoreArgs, ctrl_c, finish, progress, runtime};
use std::process::ExitCode;

/// Arguments of `weir resume`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The run to resume; all unfinished runs when left out.
    run: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let (config, output) = args.store.settings()?;
        let store = config.store().await?;
        let ids = match &args.run {
            Some(id) => vec![id.clone()],
            None => store.unfinished_runs().await?,
        };
        if ids.is_empty() {
            eprintln!("no unfinished runs in {}", config.data.display());
            return Ok(ExitCode::SUCCESS);
        }
        let mut code = ExitCode::SUCCESS;
        for id in ids {
            let (pipeline, _) = weir_daemon::stored(&store, &id).await?;
            if output == crate::output::Output::Table {
                println!("resuming run {id} of {}", pipeline.name.value);
            }
            let finished = weir_daemon::drive(
                &store,
                &pipeline,
                &id,
                &config.options_for(&pipeline).await?,
                ctrl_c(),
                progress(output),
            )
            .await?;
            let this = finish(&finished, output)?;
            if this != ExitCode::SUCCESS {
                code = this;
            }
        }
        store.close().await;
        Ok(code)
    })
}
