//! What validation computes travels with the pipeline: its graph, its
//! parsed crons, and what its expressions read.

#[test]
fn a_validated_pipeline_carries_its_graph_crons_and_reads() {
    let source = "name: kept
on:
  schedule:
    - { cron: \"30 2 * * 1\" }
defaults: { executor: process }
steps:
  a: { run: 'true' }
  b: { needs: [a], env: { AFTER: '${{ event.after }}' }, run: 'echo $AFTER' }
  gate: { needs: [b], gate: ['!has(models.churn.production) || steps.a.exit_code == 0'] }
";
    let validated = weir_model::validate(source);
    let pipeline = validated
        .pipeline
        .unwrap_or_else(|| panic!("{:?}", validated.diagnostics));
    assert_eq!(pipeline.dag.ids(), ["a", "b", "gate"]);
    assert!(pipeline.dag.is_upstream(0, 2));
    assert!(
        pipeline.reads.models && pipeline.reads.event,
        "{:?}",
        pipeline.reads
    );
    let slot = chrono::DateTime::parse_from_rfc3339("2026-12-07T02:30:00Z").expect("time");
    assert!(
        pipeline.on.schedule[0]
            .parsed
            .is_time_matching(&slot)
            .expect("matches")
    );

    let plain =
        weir_model::validate("name: plain\nsteps:\n  a: { executor: process, run: 'true' }\n")
            .pipeline
            .expect("valid");
    assert_eq!(plain.reads, weir_model::pipeline::Reads::default());
}
