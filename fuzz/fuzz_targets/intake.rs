//! Fuzzes what a stranger can send the daemon's intake: a webhook's
//! signature header and body, and the same bytes as a drift report (its
//! JSON, then the PSI and KL of its histograms). Any bytes must give an
//! answer, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first line is the signature header, the rest the body.
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&data[..0], data),
    };
    let header = std::str::from_utf8(header).ok();
    let _ = weir_daemon::signed(b"the pipeline's secret", body, header);
    if let Ok(payload) = serde_json::from_slice::<serde_json::Value>(body) {
        let _ = payload.to_string();
    }
    if let Ok(report) = serde_json::from_slice::<weir_api::DriftReport>(body) {
        if let (Some(reference), Some(current)) = (&report.reference, &report.current) {
            let _ = weir_engine::drift::psi(reference, current);
            let _ = weir_engine::drift::kl(reference, current);
        }
    }
    let _ = serde_json::from_slice::<weir_api::Promotion>(body);
});
