//! `weir plan`: layers, matrix instances, params and templates resolved.

use crate::{stderr, stdout, weir};

#[test]
fn plans_the_churn_pipeline_in_layers() {
    let out = weir(&["plan", "pipelines/churn.yaml", "--param", "lr=0.1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("pipeline churn: 9 step instances in 8 layers\nparams: lr=0.1 (given)\n"),
        "{text}"
    );
    assert!(text.contains("  train[lr=0.01] (command) after ingest\n    command: python train.py --lr 0.01 --out model-0.01.pkl\n"));
    assert!(
        text.contains("    run: python validate.py --model \"model-0.1.pkl\" --keep model.pkl\n")
    );
    // Run-time values stay as written.
    assert!(text.contains("--version \"${{ steps.register.outputs.version }}\""));
    assert!(text.contains("    if: params.lr != \"0\" => true\n"));
}

#[test]
fn json_plan_has_every_instance() {
    let out = weir(&["plan", "pipelines/churn.yaml", "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let layers = plan["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 8);
    let ids: Vec<&str> = layers[1]
        .as_array()
        .expect("layer")
        .iter()
        .map(|s| s["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids, ["train[lr=0.01]", "train[lr=0.1]"]);
    assert_eq!(layers[1][1]["command"][3], "0.1");
    assert_eq!(layers[1][1]["resources"]["gpus"], 1);
    assert_eq!(plan["params"][0]["source"], "default");
}

#[test]
fn a_false_condition_skips_the_step_and_its_dependants() {
    let out = weir(&[
        "plan",
        "crates/model/test_data/valid/if-skipped.yaml",
        "--param",
        "deploy=no",
    ]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("    skipped: if is false\n"));
    assert!(text.contains("    skipped: upstream 'deploy' is skipped\n"));
}

#[test]
fn unknown_and_missing_params_are_errors() {
    let out = weir(&["plan", "pipelines/churn.yaml", "--param", "lrr=1"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "pipelines/churn.yaml: unknown param 'lrr' (did you mean 'lr'?)\n"
    );

    let out = weir(&["plan", "crates/model/test_data/valid/full.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "crates/model/test_data/valid/full.yaml: param 'note' has no default: pass --param note=VALUE\n"
    );
}

#[test]
fn a_malformed_param_flag_is_refused_by_the_parser() {
    let out = weir(&["plan", "pipelines/churn.yaml", "--param", "lr"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("expected NAME=VALUE"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_invalid_file_prints_its_diagnostics() {
    let out = weir(&["plan", "crates/model/test_data/invalid/cycle.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .starts_with("crates/model/test_data/invalid/cycle.yaml:5:13: cycle: a -> c -> b -> a")
    );
}
