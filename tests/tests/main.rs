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

/// With `autotests = false` cargo no longer finds test files by itself: a file added beside a
/// crate's tests/main.rs and not declared in it would silently never run. Checked here for every
/// crate of the workspace that has one.
#[test]
fn every_test_file_is_a_module_of_its_crates_test_binary() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut crates = vec![root.join("tests")];
    for group in ["crates", "functions"] {
        for entry in std::fs::read_dir(root.join(group)).expect("the workspace's crates") {
            crates.push(entry.expect("a directory entry").path());
        }
    }
    let mut checked = 0;
    for crate_dir in crates {
        let tests = crate_dir.join("tests");
        let Ok(declared) = std::fs::read_to_string(tests.join("main.rs")) else {
            continue;
        };
        checked += 1;
        for entry in std::fs::read_dir(&tests).expect("the tests directory") {
            let name = entry.expect("a directory entry").file_name();
            let name = name.to_string_lossy();
            if let Some(module) = name.strip_suffix(".rs").filter(|m| *m != "main") {
                assert!(
                    declared.contains(&format!("\nmod {module};\n")),
                    "{}/{name} is not a module of its main.rs",
                    tests.display()
                );
            }
        }
    }
    assert_eq!(checked, 3, "latch-tests, latch-cli and grant each have one test binary");
}
