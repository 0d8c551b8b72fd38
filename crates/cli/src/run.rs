//! `weir run FILE [--param k=v]…`: one pipeline, now, in this process, with
//! the same engine and store as the daemon.

use crate::local::{StoreArgs, ctrl_c, finish, progress, runtime};
use crate::plan::parse_param;
use std::path::PathBuf;
use std::process::ExitCode;
use weir_daemon::{Cause, Daemon, Notice, StartRun, Started, TriggerError};

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

fn parse_duration(
    text: &str,
) -> Result<weir_model::units::Duration, weir_model::units::DurationError> {
    weir_model::units::Duration::parse(text)
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let shown = args.file.display();
    let Some((pipeline, source)) = crate::files::load_pipeline(&args.file)? else {
        return Ok(ExitCode::FAILURE);
    };
    runtime()?.block_on(async {
        let (config, output) = args.store.settings()?;
        let options = config.options_for(&pipeline).await?;
        let store = config.store().await?;
        let name = pipeline.name.value.clone();
        let daemon = Daemon::for_file(store, &args.file, pipeline, &source, options).await?;
        // Followed from before the run exists, so no change is missed.
        let mut notices = daemon.follow();
        let start = StartRun {
            params: args.params.clone(),
            timeout: args.timeout.map(|t| t.get()),
            ..StartRun::new(&name, Cause::manual(actor()))
        };
        let id = match daemon.start_run(start).await {
            Ok(Started::Run(run)) => run.id,
            Ok(Started::Replay(_)) => unreachable!("a manual run has no delivery id"),
            Err(TriggerError::Params(errors)) => {
                for e in errors.0 {
                    eprintln!("{shown}: {e}");
                }
                daemon.shutdown(SHUTDOWN).await;
                return Ok(ExitCode::FAILURE);
            }
            Err(e) => return Err(e.into()),
        };
        if output == crate::output::Output::Table {
            println!("run {id} of {name}");
        }
        let mut show = progress(output);
        let mut interrupt = std::pin::pin!(ctrl_c());
        let mut interrupted = false;
        let finished = loop {
            tokio::select! {
                notice = notices.recv() => match notice {
                    Ok(Notice::Changed(run, change)) if run.id == id => show(&run, &change),
                    Ok(Notice::Finished(run)) if run.id == id => break (*run).clone(),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        break daemon.store().load_run(&id).await?;
                    }
                },
                () = &mut interrupt, if !interrupted => {
                    interrupted = true;
                    daemon.cancel(&id, "cancelled by Ctrl-C");
                }
            }
        };
        // The audit entries of the run (gates, registrations) are in the
        // log before weir exits.
        daemon.shutdown(SHUTDOWN).await;
        finish(&finished, output)
    })
}

/// How long `weir run` waits, once its run ended, for the audit log.
const SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(10);

/// Who `weir run` records as starting the run: the user running it.
fn actor() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "local".to_owned())
}
