//! The grant function's tests, one module per file beside this one, in a single test binary: each
//! file as its own target linked latch-core and the SDK again.
//!
//! A file beside this one must be declared here (autotests are off); latch-tests checks that
//! for every crate (`every_test_file_is_a_module_of_its_crates_test_binary`).
//!
//! Contract: a filter names the module, `cargo test -p grant --test grant_tests -- hostile_tokens::`;
//! proptest finds each module's regressions file beside it, as before.

mod hostile_corpus;
mod hostile_tokens;
mod outcome_metrics;
