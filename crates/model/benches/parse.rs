//! Parse-and-validate time of generated pipelines: a chain (each step needs
//! the one before) and a wide fan-out (every step needs one root), at 100,
//! 1,000 and 10,000 steps. Every step carries a `${{ }}` template (the same
//! in every step, as in generated pipelines); the `chain-with-if` shape also
//! gives each step an `if:` of its own, the worst case for CEL compilation. Budget
//! (DESIGN.md §7): 1,000 steps in under 20 ms.
//!
//! `cargo bench -p weir-model` prints the medians.

#![allow(missing_docs)] // criterion_group! generates an undocumented function.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::fmt::Write;
use std::hint::black_box;

/// A pipeline of `n` steps; `chain` links each to the previous one,
/// otherwise all but the first need the first; `conditions` gives each step
/// an `if:` of its own.
fn generate(n: usize, chain: bool, conditions: bool) -> String {
    let mut yaml = String::from(
        "name: generated\nparams:\n  lr: { default: \"0.01\" }\ndefaults:\n  image: busybox\n  retry: { limit: 2, delay: 10s }\n  timeout: 1h\nsteps:\n",
    );
    for i in 0..n {
        let _ = writeln!(yaml, "  s{i}:");
        if i > 0 {
            let need = if chain { i - 1 } else { 0 };
            let _ = writeln!(yaml, "    needs: [s{need}]");
            if conditions {
                // A distinct expression per step: nothing is reused.
                let _ = writeln!(
                    yaml,
                    "    if: steps.s{need}.exit_code == 0 && params.lr != \"{i}\""
                );
            }
        }
        let _ = writeln!(yaml, "    run: train --part {i} --lr ${{{{ params.lr }}}}");
    }
    yaml
}

fn validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate");
    for shape in ["chain", "fan-out", "chain-with-if"] {
        for n in [100, 1_000, 10_000] {
            let source = generate(n, shape != "fan-out", shape == "chain-with-if");
            assert!(
                !weir_model::validate(&source).has_errors(),
                "generated pipeline is valid"
            );
            group.sample_size(if n >= 10_000 { 10 } else { 30 });
            group.bench_with_input(BenchmarkId::new(shape, n), &source, |b, source| {
                b.iter(|| weir_model::validate(black_box(source)))
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = validate
}
criterion_main!(benches);
