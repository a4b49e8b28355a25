//! The `latch` binary, driven as a user would: `policy` offline; `request`, `release`, `dev`
//! and `demo` against the local emulator (AWS_ENDPOINT_URL on loopback, as ./scripts/test sets).
//! Each test uses its own table, bus and role names.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn latch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_latch"));
    c.current_dir(repo());
    c
}

fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn run(c: &mut Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = c.output().expect("latch runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into(),
        String::from_utf8_lossy(&stderr).into(),
    )
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}{:x}{:x}", std::process::id() % 0xfff, nanos % 0xfffff)
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("latch-cli-"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn require_emulator() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        endpoint.starts_with("http://127.0.0.1:"),
        "run through ./scripts/test (AWS_ENDPOINT_URL on loopback)"
    );
}

#[test]
fn policy_check_accepts_the_example_and_points_at_each_problem() {
    let (code, out, _) = run(latch().args(["policy", "check", "infra/policies.yaml"]));
    assert_eq!(code, 0);
    assert!(
        out.contains("infra/policies.yaml: ok (3 permission sets, 3 rules"),
        "{out}"
    );

    let example = std::fs::read_to_string(repo().join("infra/policies.yaml")).unwrap();
    let bad = example
        .replace("actions: [s3:ListBucket]", "actions: [\"iam:*\"]")
        .replace("permission_sets: [db-migrate]", "permission_sets: [db-migrat]");
    let path = temp_file("bad.yaml", &bad);
    let (code, _, err) = run(latch().args(["policy", "check"]).arg(&path));
    assert_eq!(code, 1);
    let shown = path.display().to_string();
    // The line of the broken statement in the example, wherever the example puts it.
    let line = 1 + example
        .lines()
        .position(|l| l.contains("actions: [s3:ListBucket]"))
        .expect("the example's ListBucket statement");
    assert!(
        err.contains(&format!(
            "{shown}:{line}: permission set deploy-artifacts, statement 2: \"iam:*\" breaks guardrail iam_wildcard"
        )),
        "{err}"
    );
    assert!(err.contains("unknown permission set \"db-migrat\""), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn policy_explain_shows_the_rule_and_document_or_the_reason() {
    let (code, out, _) = run(latch().args(["policy", "explain", "--event", "events/pipeline-job-started.json"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("allowed by rule app-release-deploys"), "{out}");
    assert!(out.contains("\"aws:CurrentTime\": \"2026-11-25T12:15:00Z\""), "{out}");

    let mut event: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("events/pipeline-job-started.json")).unwrap())
            .unwrap();
    event["detail"]["permission_set"] = "db-migrate".into();
    let path = temp_file("denied.json", &event.to_string());
    let (code, _, err) = run(latch().args(["policy", "explain", "--event"]).arg(&path));
    assert_eq!(code, 3);
    assert!(err.contains("denied: permission_set_not_allowed"), "{err}");
}

#[test]
fn policy_explain_takes_native_events_and_says_what_each_state_does() {
    let (code, out, _) = run(latch().args([
        "policy",
        "explain",
        "--event",
        "events/codepipeline-action-started.json",
    ]));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("allowed by rule codepipeline-release-deploy"), "{out}");
    let (code, out, _) = run(latch().args(["policy", "explain", "--event", "events/codebuild-build-stopped.json"]));
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("STOPPED: ends job app-build"), "{out}");

    let other = std::fs::read_to_string(repo().join("events/codebuild-build-in-progress.json"))
        .unwrap()
        .replace("app-build", "docs-build");
    let path = temp_file("native-denied.json", &other);
    let (code, _, err) = run(latch().args(["policy", "explain", "--event"]).arg(&path));
    assert_eq!(code, 3);
    assert!(err.contains("denied: no_matching_rule"), "{err}");
}

#[test]
fn every_subcommand_has_help_a_newcomer_can_follow() {
    for (args, expect) in [
        (vec!["--help"], "just-in-time"),
        (vec!["demo", "--help"], "timeline"),
        (vec!["dev", "--help"], "--expire-ttl"),
        (vec!["request", "--help"], "3 if denied"),
        (vec!["release", "--help"], "End this job's grants now"),
        (vec!["policy", "check", "--help"], "FILE:LINE"),
        (vec!["policy", "explain", "--help"], "Exit codes"),
    ] {
        let (code, out, _) = run(latch().args(&args));
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains(expect), "{args:?}: {out}");
    }
    let (code, _, err) = run(latch().args(["request", "--role", "x"]));
    assert_eq!(code, 2, "{err}");
}

/// `latch dev` in the background on its own table, bus and role names.
struct Dev {
    child: Child,
    id: String,
    table: String,
    bus: String,
    role: String,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dev() -> Dev {
    require_emulator();
    let id = unique("c");
    let policy = std::fs::read_to_string(repo().join("infra/policies.yaml"))
        .unwrap()
        .replace(":role/latch/", &format!(":role/latch/{id}-"));
    let path = temp_file("policies.yaml", &policy);
    let (table, bus) = (format!("latch-{id}"), format!("latch-{id}"));
    let child = latch()
        .args([
            "dev",
            "--table",
            &table,
            "--bus",
            &bus,
            "--stop-after",
            "120s",
            "--sweep-every",
            "2s",
            "--policy",
        ])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Provisioned once the bus accepts the events the runner listens for.
    std::thread::sleep(Duration::from_secs(3));
    let role = format!("arn:aws:iam::123456789012:role/latch/{id}-app-deployer");
    Dev {
        child,
        id,
        table,
        bus,
        role,
    }
}

fn request(dev: &Dev, run_id: &str, set: &str, extra: &[&str]) -> (i32, String, String) {
    run(latch()
        .args([
            "request",
            "--source",
            "ci.github",
            "--bus",
            &dev.bus,
            "--table",
            &dev.table,
        ])
        .args([
            "--pipeline",
            "app-release",
            "--run-id",
            run_id,
            "--job",
            "deploy",
            "--ref",
            "refs/heads/main",
        ])
        .args([
            "--role",
            &dev.role,
            "--permission-set",
            set,
            "--duration",
            "15m",
            "--settle",
            "0s",
        ])
        .args(extra))
}

#[test]
fn request_waits_for_the_decision_and_release_ends_the_grant() {
    let dev = start_dev();
    let run_id = unique("r");
    let (code, out, err) = request(&dev, &run_id, "deploy-artifacts", &["--wait", "--timeout", "30s"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("active: grant "), "{out}");

    let (code, _, err) = request(&dev, &run_id, "db-migrate", &["--wait", "--timeout", "30s"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("denied: permission_set_not_allowed"), "{err}");

    let (code, _, err) = run(latch()
        .args(["release", "--source", "ci.github", "--bus", &dev.bus])
        .args([
            "--pipeline",
            "app-release",
            "--run-id",
            &run_id,
            "--job",
            "deploy",
            "--outcome",
            "failure",
        ]));
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _, err) = request(&dev, &run_id, "deploy-artifacts", &["--wait", "--timeout", "5s"]);
        if code == 3 && err.contains("already ended") {
            break;
        }
        assert!(Instant::now() < deadline, "the grant never ended: {code} {err}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn request_times_out_when_nothing_decides() {
    let dev = start_dev();
    // A source no rule routes to the grant function: no decision will ever come.
    let (code, _, err) = run(latch()
        .args([
            "request",
            "--source",
            "ci.unrouted",
            "--bus",
            &dev.bus,
            "--table",
            &dev.table,
        ])
        .args(["--pipeline", "p", "--run-id", "1", "--job", "j", "--role", &dev.role])
        .args([
            "--permission-set",
            "deploy-artifacts",
            "--duration",
            "5m",
            "--wait",
            "--timeout",
            "2s",
        ]));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("timed out"), "{err}");
}

#[test]
fn demo_prints_the_whole_timeline() {
    require_emulator();
    let id = unique("d");
    let (code, out, err) = run(latch().args([
        "demo",
        "--table",
        &format!("latch-{id}"),
        "--bus",
        &format!("latch-{id}"),
    ]));
    assert_eq!(code, 0, "{out}{err}");
    for step in [
        "GRANTED by the policy",
        "\"aws:CurrentTime\"",
        "DENIED: permission_set_not_allowed",
        "DENIED: no_matching_rule",
        "duplicate: grant",
        "REVOKED 1 grant(s): reason job_finished",
        "the sweep (every minute in AWS) revoked 1 expired grant(s)",
        "revoke function: skipped (grant already revoked)",
        "expired_sweep",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
}

// ---- The CI examples in examples/: parsed, then their commands run with the variables each CI sets.

fn yaml(path: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(repo().join(path)).unwrap()).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn as_str(v: &serde_yaml::Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// Runs a CI step's shell command with `target/debug` on PATH and the given variables.
fn run_step(command: &str, env: &[(&str, String)]) -> (i32, String, String) {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_latch")).parent().unwrap().to_owned();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut c = Command::new("bash");
    c.args(["-euo", "pipefail", "-c", command])
        .current_dir(repo())
        .env("PATH", path);
    for (k, v) in env {
        c.env(k, v);
    }
    run(&mut c)
}

#[test]
fn the_github_action_and_workflow_request_wait_and_release() {
    let action = yaml("examples/github-actions/latch-request/action.yml");
    let workflow = yaml("examples/github-actions/deploy.yml");
    assert_eq!(
        as_str(&workflow["permissions"]["id-token"]),
        "write",
        "OIDC credentials need id-token: write"
    );
    let steps = workflow["jobs"]["deploy"]["steps"].as_sequence().unwrap();
    let elevate = steps
        .iter()
        .find(|s| as_str(&s["uses"]) == "./examples/github-actions/latch-request")
        .unwrap();
    let release = steps
        .iter()
        .find(|s| as_str(&s["run"]).starts_with("latch release"))
        .unwrap();
    assert_eq!(
        as_str(&release["if"]),
        "always()",
        "grants end whatever the job's outcome"
    );

    let dev = start_dev();
    // The action's command, with its inputs filled from the workflow's `with:` (or defaults).
    let mut command = as_str(&action["runs"]["steps"][0]["run"]).to_owned();
    for (name, input) in action["inputs"].as_mapping().unwrap() {
        let name = as_str(name);
        let value = match as_str(&elevate["with"][name]) {
            "" => as_str(&input["default"]).to_owned(),
            v => v.to_owned(),
        };
        let value = match name {
            "bus" => dev.bus.clone(),
            "table" => dev.table.clone(),
            "role" => value.replace(":role/latch/", &format!(":role/latch/{}-", dev.id)),
            "reason" => "deploy abc123".into(),
            _ => value,
        };
        command = command.replace(&format!("${{{{ inputs.{name} }}}}"), &value);
    }
    assert!(!command.contains("${{"), "every input is filled: {command}");
    let run_id = unique("");
    let github = vec![
        ("GITHUB_ACTIONS", "true".to_owned()),
        ("GITHUB_REPOSITORY", "acme/app-release".to_owned()),
        ("GITHUB_RUN_ID", run_id.clone()),
        ("GITHUB_JOB", "deploy".to_owned()),
        ("GITHUB_RUN_ATTEMPT", "1".to_owned()),
        ("GITHUB_REF", "refs/heads/main".to_owned()),
        ("GITHUB_SHA", "0123abcd".to_owned()),
        ("GITHUB_ACTOR", "octocat".to_owned()),
        ("LATCH_REASON", "deploy abc123".to_owned()),
        ("LATCH_BUS", dev.bus.clone()),
        ("LATCH_TABLE", dev.table.clone()),
    ];
    let (code, out, err) = run_step(&format!("{command} --settle 0s"), &github);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("active: grant"), "{out}");
    assert!(
        err.contains("as app-release/"),
        "the pipeline is the repository's name: {err}"
    );

    let release_cmd = as_str(&release["run"]).replace("${{ job.status }}", "success");
    let (code, _, err) = run_step(&release_cmd, &github);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("released app-release/{run_id}/deploy#1")),
        "{err}"
    );
}

#[test]
fn the_gitlab_job_requests_waits_and_releases() {
    let ci = yaml("examples/gitlab/.gitlab-ci.yml");
    let job = &ci["deploy"];
    assert_eq!(as_str(&job["id_tokens"]["AWS_OIDC_TOKEN"]["aud"]), "sts.amazonaws.com");
    let request = job["script"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(as_str)
        .find(|c| c.starts_with("latch request"))
        .unwrap();
    let release = job["after_script"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(as_str)
        .find(|c| c.starts_with("latch release"))
        .unwrap();
    assert!(request.contains("--wait"), "{request}");

    let dev = start_dev();
    // The rule for GitLab names roles by pattern (ci-*): make the one the job asks for.
    let role = format!("{}-ci-deployer", dev.id);
    create_role(&role);
    let run_id = unique("");
    let gitlab = vec![
        ("GITLAB_CI", "true".to_owned()),
        ("CI_PROJECT_NAME", "platform-tools".to_owned()),
        ("CI_PIPELINE_ID", run_id.clone()),
        ("CI_JOB_NAME", "deploy".to_owned()),
        ("CI_COMMIT_SHA", "0123abcd".to_owned()),
        ("CI_COMMIT_REF_NAME", "main".to_owned()),
        ("GITLAB_USER_LOGIN", "maintainer".to_owned()),
        ("CI_JOB_STATUS", "failed".to_owned()),
        ("LATCH_SOURCE", as_str(&job["variables"]["LATCH_SOURCE"]).to_owned()),
        ("LATCH_BUS", dev.bus.clone()),
        ("LATCH_TABLE", dev.table.clone()),
    ];
    let request = format!(
        "{} --settle 0s --timeout 30s",
        request.replace(":role/latch/", &format!(":role/latch/{}-", dev.id))
    );
    let (code, out, err) = run_step(&request, &gitlab);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains(&format!("as platform-tools/{run_id}/deploy#1")), "{err}");
    let (code, _, err) = run_step(release, &gitlab);
    assert_eq!(code, 0, "{err}");
}

fn create_role(name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
        aws_sdk_iam::Client::new(&sdk)
            .create_role()
            .role_name(name)
            .path("/latch/")
            .assume_role_policy_document(r#"{"Version":"2012-10-17","Statement":[]}"#)
            .send()
            .await
            .unwrap();
    });
}
