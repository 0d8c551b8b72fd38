//! What a stranger can send the intake, as properties over random bytes
//! (the libFuzzer target `fuzz/fuzz_targets/intake.rs` runs the same
//! ground for longer): any signature header and body get a yes or a no,
//! the right signature a yes, and any changed byte a no.

use crate::sign;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_header_and_body_get_an_answer(
        header in proptest::option::of(".{0,80}"),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let _ = weir_daemon::signed(b"secret", &body, header.as_deref());
    }

    #[test]
    fn only_the_signed_body_passes(
        body in proptest::collection::vec(any::<u8>(), 1..256),
        at in any::<usize>(),
        bit in 0u8..8,
    ) {
        let signature = sign(&body, "key");
        prop_assert!(weir_daemon::signed(b"key", &body, Some(&signature)));
        prop_assert!(!weir_daemon::signed(b"other", &body, Some(&signature)));
        let mut changed = body.clone();
        let at = at % changed.len();
        changed[at] ^= 1 << bit;
        prop_assert!(!weir_daemon::signed(b"key", &changed, Some(&signature)));
        prop_assert!(!weir_daemon::signed(b"key", &body, Some(&signature.to_uppercase().replace("SHA256=", "sha1="))));
    }
}
