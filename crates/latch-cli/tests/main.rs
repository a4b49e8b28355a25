//! The `latch` binary's tests, one module per file beside this one, in a single test binary: each
//! file as its own target linked the whole SDK again.
//!
//! A file beside this one must be declared here (autotests are off); latch-tests checks that
//! for every crate (`every_test_file_is_a_module_of_its_crates_test_binary`).
//!
//! Contract: the tests run in one process beside each other, so each owns its names (tables,
//! buses, roles, its own directory under `CARGO_TARGET_TMPDIR`). A filter names the module:
//! `cargo test -p latch-cli --test cli_tests -- audit_verify::`.

mod archive_immutable;
mod audit_cli;
mod audit_schema;
mod audit_verify;
mod cli;
