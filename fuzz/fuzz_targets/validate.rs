//! Fuzzes the pipeline parser: any bytes, as text, must validate to a
//! pipeline or to diagnostics, never a panic; a valid pipeline must plan.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(source) = std::str::from_utf8(data) {
        let validated = weir_model::validate(source);
        if let Some(pipeline) = &validated.pipeline {
            let _ = weir_model::plan(pipeline, &[]);
        }
    }
});
