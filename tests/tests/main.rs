//! The integration tests, one module per file beside this one, in a single test binary: each
//! file as its own target linked the whole SDK and monomorphised the same generic code again.
//!
//! Contract: every test runs in one process beside the others (as many at once as
//! `--test-threads`, by default the machine's cores), so a test owns its resources (a unique
//! suffix on each table, bus, queue and role; a module's private emulator is a static of that
//! module) and rests on no timing a neighbour could disturb. Filters name the module:
//! `cargo test -p latch-tests -- strict_aws::` runs one file, `fault_campaign::` the campaign,
//! which `./scripts/test` runs beside the rest (`--skip fault_campaign::`).

mod archive;
mod audit_create_only;
mod boundary;
mod conflicts;
mod fair_share;
mod fault_campaign;
mod grant;
mod iam_holds;
mod identity;
mod native;
mod revoke;
mod strict_aws;
mod sweep_keeps_up;

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
