//! For random DAGs and random outcomes (success, failure, lost, cancel at
//! a random moment), driven by a simulated executor that reports in random
//! order: every run reaches a terminal state, no step starts before all its
//! needs succeeded, and no attempt is started twice.

use crate::{pipeline, t0};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use weir_engine::{Action, Event, Outcome, StepState, advance, new_run};

#[derive(Debug, Clone)]
struct StepSpec {
    needs: Vec<usize>,
    retry: u32,
    matrix: usize,
    max_parallel: Option<u32>,
    condition: Option<bool>,
}

fn step_spec(index: usize) -> impl Strategy<Value = StepSpec> {
    (
        proptest::collection::vec(any::<bool>(), index),
        0u32..3,
        prop_oneof![Just(0usize), 2usize..4],
        proptest::option::of(1u32..3),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(|(needs, retry, matrix, max_parallel, condition)| StepSpec {
            needs: needs
                .iter()
                .enumerate()
                .filter(|(_, n)| **n)
                .map(|(i, _)| i)
                .collect(),
            retry,
            matrix,
            max_parallel: if matrix > 0 { max_parallel } else { None },
            condition,
        })
}

fn dag() -> impl Strategy<Value = Vec<StepSpec>> {
    (1usize..9).prop_flat_map(|n| (0..n).map(step_spec).collect::<Vec<_>>())
}

fn yaml(steps: &[StepSpec]) -> String {
    let mut out = String::from(
        "name: random\nparams: { go: \"yes\" }\ndefaults: { executor: process }\nsteps:\n",
    );
    for (i, s) in steps.iter().enumerate() {
        out.push_str(&format!(
            "  s{i}:\n    run: step {i}\n    retry: {{ limit: {}, delay: 1s }}\n",
            s.retry
        ));
        if !s.needs.is_empty() {
            let needs: Vec<String> = s.needs.iter().map(|n| format!("s{n}")).collect();
            out.push_str(&format!("    needs: [{}]\n", needs.join(", ")));
        }
        if s.matrix > 0 {
            let values: Vec<String> = (0..s.matrix).map(|v| v.to_string()).collect();
            out.push_str(&format!("    matrix: {{ x: [{}] }}\n", values.join(", ")));
        }
        if let Some(max) = s.max_parallel {
            out.push_str(&format!("    max_parallel: {max}\n"));
        }
        if let Some(holds) = s.condition {
            let value = if holds { "yes" } else { "no" };
            out.push_str(&format!("    if: params.go == '{value}'\n"));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn every_run_ends_in_order_and_starts_each_attempt_once(
        steps in dag(),
        outcomes in proptest::collection::vec(0u8..10, 200),
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 200),
        slots in 1usize..4,
        cancel_at in proptest::option::of(0usize..30),
    ) {
        let p = pipeline(&yaml(&steps));
        let mut run = new_run(&p, "r", weir_engine::Cause::manual("tester"), &[], serde_json::Value::Null, serde_json::json!({}), t0())
            .expect("no required params");
        let mut now = t0();
        let mut started: BTreeSet<(usize, u32)> = BTreeSet::new();
        // Attempts started and not yet reported on; `reported` ones have
        // their report queued in `events`.
        let mut in_flight: Vec<(usize, u32)> = Vec::new();
        let mut reported: BTreeSet<(usize, u32)> = BTreeSet::new();
        let mut wake: Option<chrono::DateTime<chrono::Utc>> = None;
        let mut events = std::collections::VecDeque::from([Event::Tick]);
        let mut n_outcome = 0;
        // A copy kept up to date part by part, as a run's driver keeps
        // the state it last committed.
        let mut committed = run.clone();
        for round in 0..5_000 {
            if Some(round) == cancel_at {
                events.push_front(Event::Cancel { reason: "test".into() });
            }
            let event = events.pop_front().unwrap_or(Event::Tick);
            if let Event::Exited { step, attempt, .. } | Event::Lost { step, attempt } = &event {
                in_flight.retain(|f| f != &(*step, *attempt));
                reported.remove(&(*step, *attempt));
            }
            let free = slots.saturating_sub(in_flight.len());
            let actions = advance(&mut run, &p, event, now, free).expect("events fit");
            committed.catch_up(&run);
            prop_assert_eq!(&committed, &run, "caught up with the run");
            for action in actions {
                match action {
                    Action::Start { step, attempt } => {
                        prop_assert!(started.insert((step, attempt)), "attempt {attempt} of #{step} started twice");
                        let instance = &run.steps[step];
                        prop_assert_eq!(attempt as usize, instance.attempts.len());
                        for need in &steps[instance.step].needs {
                            for other in run.steps.iter().filter(|s| s.step == *need) {
                                prop_assert_eq!(other.state, StepState::Succeeded, "{} started before {}", &instance.id, &other.id);
                            }
                        }
                        in_flight.push((step, attempt));
                    }
                    Action::Stop { step, attempt, .. } => {
                        prop_assert!(in_flight.contains(&(step, attempt)), "stop of an attempt not running");
                    }
                    Action::WakeAt(at) => wake = Some(at),
                }
            }
            prop_assert!(in_flight.len() <= slots, "more attempts than slots");
            if !events.is_empty() {
                continue;
            }
            if run.state.is_terminal() {
                prop_assert!(in_flight.is_empty(), "run ended with attempts in flight");
                prop_assert!(run.steps.iter().all(|s| s.state.is_terminal()));
                return Ok(());
            }
            // The simulated executor reports on one attempt in flight, or time passes.
            let waiting: Vec<(usize, u32)> = in_flight.iter().copied().filter(|f| !reported.contains(f)).collect();
            if waiting.is_empty() {
                let at = wake.take().expect("a run that waits names a wake-up time");
                prop_assert!(at > now);
                now = at;
                events.push_back(Event::Tick);
                continue;
            }
            let (step, attempt) = waiting[picks[round % picks.len()].index(waiting.len())];
            reported.insert((step, attempt));
            now += chrono::Duration::milliseconds(10);
            let _ = advance(&mut run, &p, Event::Started { step, attempt }, now, 0).expect("start fits");
            let roll = outcomes[n_outcome % outcomes.len()];
            n_outcome += 1;
            events.push_back(match roll {
                0..=6 => Event::Exited { step, attempt, outcome: Outcome { exit_code: Some(0), ..Outcome::default() } },
                7 | 8 => Event::Exited { step, attempt, outcome: Outcome { exit_code: Some(1), ..Outcome::default() } },
                _ => Event::Lost { step, attempt },
            });
        }
        let states: BTreeMap<String, StepState> = run.steps.iter().map(|s| (s.id.clone(), s.state)).collect();
        prop_assert!(false, "no terminal state after 5000 rounds: {states:?}");
    }
}
