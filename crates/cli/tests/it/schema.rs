//! `weir schema`: the JSON Schema, printed.

use crate::{stdout, weir};

#[test]
fn prints_the_schema_of_the_model() {
    let out = weir(&["schema"]);
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(printed, weir_model::schema());
    assert_eq!(
        printed["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(stdout(&out).contains("\"steps\""));
}
