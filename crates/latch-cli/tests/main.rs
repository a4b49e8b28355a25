//! The `latch` binary's tests, one module per file beside this one, in a single test binary: each
//! file as its own target linked the whole SDK again.
//!
//! Contract: the tests run in one process beside each other, so each owns its names (tables,
//! buses, roles, its own directory under `CARGO_TARGET_TMPDIR`). A filter names the module:
//! `cargo test -p latch-cli --test cli_tests -- audit_verify::`.

mod archive_immutable;
mod audit_cli;
mod audit_schema;
mod audit_verify;
mod cli;

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
