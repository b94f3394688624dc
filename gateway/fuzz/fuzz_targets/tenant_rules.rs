//! cargo-fuzz target: `fencegate_gateway_fuzz::tenant_rules` (see its doc for the
//! input layout and the invariants checked). The body lives in the library
//! so `gateway/tests/fuzz_corpus.rs` runs the same code in CI.

#![no_main]

use std::sync::Once;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // libFuzzer's panic hook aborts on every panic, even one the code
        // under test catches. toml_edit 0.23.10's parser panics on some
        // malformed TOML, and `rules::store` catches exactly that panic
        // (docs/PERFORMANCE.md, "Fuzzing"); let that one unwind to its
        // `catch_unwind`. Any other panic still aborts and is a crash.
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let caught_upstream = info.location().is_some_and(|l| {
                l.file().contains("toml_edit") && l.file().ends_with("parser/document.rs")
            });
            if !caught_upstream {
                abort(info);
            }
        }));
    });
    // Whether the input was accepted only matters to the CI test's checks.
    let _ = fencegate_gateway_fuzz::tenant_rules(data);
});
