//! The schema and the parser agree: every file the parser accepts conforms
//! to the schema, and files with unknown keys or wrong types do not.

use crate::{test_data, yaml_files};
use std::path::Path;

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&weir_model::schema()).expect("the schema is a valid JSON Schema")
}

fn errors(validator: &jsonschema::Validator, path: &Path) -> Vec<String> {
    let source = std::fs::read_to_string(path).expect("readable");
    let json = weir_model::to_json(&source).expect("YAML");
    validator
        .iter_errors(&json)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn valid_files_and_examples_conform() {
    let validator = validator();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines");
    let files: Vec<_> = yaml_files(&test_data("valid"))
        .into_iter()
        .chain(yaml_files(&examples))
        .collect();
    assert!(files.len() >= 10);
    for path in files {
        let errors = errors(&validator, &path);
        assert!(
            errors.is_empty(),
            "{} does not conform: {errors:#?}",
            path.display()
        );
    }
}

#[test]
fn shape_errors_are_schema_errors_too() {
    let validator = validator();
    for name in [
        "unknown-key-top",
        "unknown-key-step",
        "unknown-key-nested",
        "wrong-type-steps-list",
        "wrong-type-scalars",
        "strict-booleans",
        "missing-name",
        "two-kinds",
        "no-kind",
        "invalid-gpus",
        "bad-enums",
        "invalid-step-id",
    ] {
        let path = test_data("invalid").join(format!("{name}.yaml"));
        assert!(
            !errors(&validator, &path).is_empty(),
            "{name} conforms to the schema"
        );
    }
}
