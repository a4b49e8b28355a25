//! The grant function's tests, one module per file beside this one, in a single test binary: each
//! file as its own target linked latch-core and the SDK again.
//!
//! Contract: a filter names the module, `cargo test -p grant --test grant_tests -- hostile_tokens::`;
//! proptest finds each module's regressions file beside it, as before.

mod hostile_corpus;
mod hostile_tokens;
mod outcome_metrics;

/// With `autotests = false` cargo no longer finds test files by itself: a file added beside this
/// one and not declared above would silently never run.
#[test]
fn every_file_beside_main_is_one_of_its_modules() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let declared = include_str!("main.rs");
    for entry in std::fs::read_dir(&dir).expect("the tests directory") {
        let name = entry.expect("a directory entry").file_name();
        let name = name.to_string_lossy();
        if let Some(module) = name.strip_suffix(".rs").filter(|m| *m != "main") {
            assert!(
                declared.contains(&format!("\nmod {module};\n")),
                "tests/{name} is not a module of tests/main.rs"
            );
        }
    }
}
