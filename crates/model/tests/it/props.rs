//! Properties of the parser: whatever the text, validation answers with a
//! pipeline or diagnostics and never panics; diagnostics always point at a
//! real position; a pipeline that validates can be planned.

use crate::{test_data, yaml_files};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn corpus() -> Vec<String> {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines");
    yaml_files(&test_data("valid"))
        .into_iter()
        .chain(yaml_files(&test_data("invalid")))
        .chain(yaml_files(&examples))
        .map(|p| std::fs::read_to_string(p).expect("readable"))
        .collect()
}

/// Validates `source` and checks what any answer must satisfy.
fn answers_sanely(source: &str) {
    let validated = weir_model::validate(source);
    let n_lines = source.lines().count().max(1) as u32 + 1;
    for d in &validated.diagnostics {
        assert!(
            d.pos.line >= 1 && d.pos.line <= n_lines,
            "{d} outside the file"
        );
        assert!(d.pos.column >= 1, "{d} has column 0");
        assert!(!d.message.is_empty());
    }
    match &validated.pipeline {
        Some(pipeline) => {
            assert!(!validated.has_errors());
            let _ = weir_model::plan(pipeline, &[]);
        }
        None => assert!(validated.has_errors(), "no pipeline and no error"),
    }
}

/// A small edit of a file: characters YAML and CEL care about, inserted,
/// deleted or swapped at some point.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, String),
    Delete(usize, usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let fragment = prop_oneof![
        Just(":".to_owned()),
        Just("- ".to_owned()),
        Just("\n  ".to_owned()),
        Just("${{".to_owned()),
        Just("}}".to_owned()),
        Just("&a ".to_owned()),
        Just("*a".to_owned()),
        Just("<<: *a\n".to_owned()),
        Just("\"".to_owned()),
        Just("[".to_owned()),
        Just("{".to_owned()),
        Just("\t".to_owned()),
        Just("needs: [x]".to_owned()),
        Just("é".to_owned()),
        "\\PC{0,8}",
    ];
    prop_oneof![
        (any::<usize>(), fragment).prop_map(|(at, s)| Edit::Insert(at, s)),
        (any::<usize>(), 1usize..20).prop_map(|(at, n)| Edit::Delete(at, n)),
        any::<usize>().prop_map(Edit::DuplicateLine),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(source: &str, edit: &Edit) -> String {
    let chars: Vec<char> = source.chars().collect();
    let n = chars.len().max(1);
    let mut lines: Vec<&str> = source.lines().collect();
    match edit {
        Edit::Insert(at, s) => {
            let at = at % n;
            chars[..at]
                .iter()
                .chain(s.chars().collect::<Vec<_>>().iter())
                .chain(&chars[at..])
                .collect()
        }
        Edit::Delete(at, len) => {
            let at = at % n;
            let end = (at + len).min(chars.len());
            chars[..at].iter().chain(&chars[end..]).collect()
        }
        Edit::DuplicateLine(i) if !lines.is_empty() => {
            let i = i % lines.len();
            lines.insert(i, lines[i]);
            lines.join("\n")
        }
        Edit::SwapLines(a, b) if !lines.is_empty() => {
            let (a, b) = (a % lines.len(), b % lines.len());
            lines.swap(a, b);
            lines.join("\n")
        }
        Edit::Truncate(at) => chars[..at % n].iter().collect(),
        _ => source.to_owned(),
    }
}

#[test]
fn mutated_pipelines_never_panic() {
    let corpus = corpus();
    let mut runner = TestRunner::new(Config {
        cases: 2000,
        ..Config::default()
    });
    let strategy = (0..corpus.len(), proptest::collection::vec(edit(), 1..4));
    runner
        .run(&strategy, |(index, edits)| {
            let mut source = corpus[index].clone();
            for e in &edits {
                source = apply(&source, e);
            }
            answers_sanely(&source);
            Ok(())
        })
        .expect("no panic on mutated pipelines");
}

proptest! {
    #![proptest_config(Config { cases: 1000, ..Config::default() })]

    #[test]
    fn random_text_never_panics(source in "\\PC{0,200}") {
        answers_sanely(&source);
    }

    #[test]
    fn random_expressions_never_panic(expr in "[a-z._()\\[\\]'\" =!<>&|+*0-9{}$,?:-]{0,40}") {
        let source = format!(
            "name: p\nparams: {{ x: \"1\" }}\nsteps:\n  a: {{ run: echo, executor: process }}\n  b:\n    needs: [a]\n    executor: process\n    if: '{}'\n    run: 'echo ${{{{ {} }}}}'\n",
            expr.replace('\'', "''"),
            expr.replace('\'', "''"),
        );
        answers_sanely(&source);
    }
}
