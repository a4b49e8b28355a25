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
fn policy_check_prints_the_worst_case_documents_of_the_example_and_lists_the_guardrails() {
    let (code, out, err) = run(latch().args(["policy", "check", "infra/policies.yaml"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("worst case of lambda-deploy under rule app-release-deploys: ${pipeline}=app-* ${job}=* ${account}=123456789012 ${region}=*"),
        "{out}"
    );
    assert!(
        out.contains("\"arn:aws:lambda:*:123456789012:function:app-*-*\""),
        "{out}"
    );
    assert!(
        out.contains("worst case of lambda-deploy under rule codepipeline-release-deploy"),
        "{out}"
    );
    assert!(out.contains("\"aws:CurrentTime\": \"<expiry>\""), "{out}");

    let (code, out, _) = run(latch().args(["policy", "check", "--guardrails"]));
    assert_eq!(code, 0);
    for name in [
        "iam-policy-versions",
        "passrole-lambda",
        "lambda-code-update",
        "latch-self-modification",
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not listed: {out}"));
        assert!(line.contains("https://"), "{line}");
    }
}

#[test]
fn policy_check_refuses_the_function_takeover_at_its_line_naming_the_method() {
    let example = std::fs::read_to_string(repo().join("infra/policies.yaml")).unwrap();
    // A rule bound to the owner only: the repository's name, hence ${pipeline}, can be `latch`.
    let bad = example.replace(
        "      repository: example-org/app-*\n      ref: [refs/heads/main, refs/tags/v*]",
        "      repository_owner: example-org\n      ref: [refs/heads/main, refs/tags/v*]",
    );
    assert_ne!(bad, example);
    let path = temp_file("takeover.yaml", &bad);
    let (code, _, err) = run(latch().args(["policy", "check"]).arg(&path));
    assert_eq!(code, 1);
    let line = 1 + example
        .lines()
        .position(|l| l.contains("lambda:UpdateFunctionCode"))
        .expect("the example's lambda-deploy statement");
    let shown = path.display().to_string();
    assert!(
        err.contains(&format!(
            "{shown}:{line}: permission set lambda-deploy, statement 1: \"lambda:UpdateFunctionCode\" uses escalation method latch-self-modification (rule app-release-deploys can render arn:aws:lambda:*:123456789012:function:*-*)"
        )),
        "{err}"
    );
}

#[test]
fn policy_explain_shows_the_rule_and_document_or_the_reason() {
    let (code, out, _) = run(latch().args(["policy", "explain", "--event", "events/verified-job-started.json"]));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(
            "token: issuer github, principal https://token.actions.githubusercontent.com#repository:712345678"
        ),
        "{out}"
    );
    assert!(out.contains("allowed by rule app-release-deploys"), "{out}");
    assert!(out.contains("\"aws:CurrentTime\": \"2026-11-25T12:15:00Z\""), "{out}");

    let mut event: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("events/verified-job-started.json")).unwrap())
            .unwrap();
    event["detail"]["permission_set"] = "db-migrate".into();
    let path = temp_file("denied.json", &event.to_string());
    let (code, _, err) = run(latch().args(["policy", "explain", "--event"]).arg(&path));
    assert_eq!(code, 3);
    assert!(err.contains("denied: permission_set_not_allowed"), "{err}");

    // Contract v1 (no token) against verified rules: the requester is told what is missing.
    let (code, _, err) = run(latch().args(["policy", "explain", "--event", "events/pipeline-job-started.json"]));
    assert_eq!(code, 3);
    assert!(err.contains("denied: token_missing"), "{err}");
}

#[test]
fn policy_check_warns_about_each_rule_that_trusts_claimed_identity() {
    let (code, out, err) = run(latch().args(["policy", "check", "events/policy-claimed.yaml"]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(err.matches("trusts claimed identity").count(), 3, "{err}");
    // gitlab-artifacts has no cap: its grants cannot all fit IAM's inline quota on one role.
    assert!(
        err.contains("warning: rule gitlab-artifacts: no cap on live grants of deploy-artifacts"),
        "{err}"
    );
    assert!(
        err.contains("events/policy-claimed.yaml:39: warning: rule app-release-deploys trusts claimed identity"),
        "{err}"
    );
    let (_, _, err) = run(latch().args(["policy", "check", "infra/policies.yaml"]));
    assert!(
        !err.contains("warning"),
        "the shipped example uses verified rules only: {err}"
    );
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

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {out}"))
}

#[test]
fn policy_check_and_explain_answer_in_json_for_scripts() {
    // GIVEN the shipped policy file WHEN a script checks it THEN one object says what a person reads
    let (code, out, err) = run(latch().args(["policy", "check", "infra/policies.yaml", "--output", "json"]));
    assert_eq!(code, 0, "{err}");
    let report = json(&out);
    assert_eq!(report["ok"], true, "{out}");
    assert_eq!(report["file"], "infra/policies.yaml");
    assert_eq!(
        (report["permission_sets"].as_u64(), report["rules"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(report["elevatable_path"], "/latch/");
    let lambda = report["worst_cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["permission_set"] == "lambda-deploy" && c["rule"] == "app-release-deploys")
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        lambda["document"]["Statement"][0]["Resource"],
        serde_json::json!(["arn:aws:lambda:*:123456789012:function:app-*-*"]),
        "{lambda}"
    );

    // GIVEN a file with a mistake WHEN checked for a script THEN ok is false, the problem placed, exit 1
    let bad = std::fs::read_to_string(repo().join("infra/policies.yaml"))
        .unwrap()
        .replace("permission_sets: [db-migrate]", "permission_sets: [db-migrat]");
    let path = temp_file("bad.yaml", &bad);
    let (code, out, err) = run(latch().args(["policy", "check", "--output", "json"]).arg(&path));
    assert_eq!(code, 1, "{err}");
    let report = json(&out);
    assert_eq!(report["ok"], false, "{out}");
    let problem = &report["problems"][0];
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .contains("unknown permission set \"db-migrat\""),
        "{out}"
    );
    assert!(problem["line"].as_u64().is_some(), "{out}");
    assert!(
        err.contains("unknown permission set"),
        "people still read it on stderr: {err}"
    );

    let (code, out, _) = run(latch().args(["policy", "check", "--guardrails", "--output", "json"]));
    assert_eq!(code, 0);
    let methods = json(&out);
    assert!(
        methods
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "passrole-lambda" && m["sources"][0].is_string()),
        "{out}"
    );

    // GIVEN a verified event a rule allows WHEN explained for a script THEN the rule and the document
    let (code, out, _) = run(latch().args([
        "policy",
        "explain",
        "--event",
        "events/verified-job-started.json",
        "--output",
        "json",
    ]));
    assert_eq!(code, 0, "{out}");
    let allowed = json(&out);
    assert_eq!(allowed["decision"], "allowed");
    assert_eq!(allowed["rule"], "app-release-deploys");
    assert_eq!(allowed["token"]["issuer"], "github");
    assert_eq!(allowed["expires_at"], "2026-11-25T12:15:00Z");
    let statements = allowed["document"]["Statement"].as_array().unwrap();
    assert!(
        statements
            .iter()
            .all(|s| s["Condition"]["DateLessThan"]["aws:CurrentTime"] == "2026-11-25T12:15:00Z"),
        "{out}"
    );
    assert_eq!(allowed["sha256"].as_str().map(str::len), Some(64), "{out}");
    assert!(allowed["characters"].as_u64().unwrap() > 0);

    // GIVEN a set the rule does not grant THEN denied with the reason's code, exit 3
    let mut event: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("events/verified-job-started.json")).unwrap())
            .unwrap();
    event["detail"]["permission_set"] = "db-migrate".into();
    let path = temp_file("denied.json", &event.to_string());
    let (code, out, _) = run(latch()
        .args(["policy", "explain", "--output", "json", "--event"])
        .arg(&path));
    assert_eq!(code, 3);
    let denied = json(&out);
    assert_eq!(denied["decision"], "denied");
    assert_eq!(denied["reason"], "permission_set_not_allowed");

    // GIVEN a native end state THEN which job it ends
    let (code, out, _) = run(latch().args([
        "policy",
        "explain",
        "--output",
        "json",
        "--event",
        "events/codebuild-build-stopped.json",
    ]));
    assert_eq!(code, 0, "{out}");
    let ended = json(&out);
    assert_eq!(ended["decision"], "ends_job");
    assert_eq!(ended["state"], "STOPPED");
    assert!(ended["job"].as_str().unwrap().starts_with("app-build"), "{out}");
}

/// Runs latch with a stdout whose reader is already gone, as `latch … | head` leaves it.
fn run_into_closed_pipe(args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = latch()
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into())
}

#[test]
fn a_reader_that_stops_early_ends_latch_quietly() {
    // GIVEN stdout's reader gone (`| head` after its lines) WHEN latch prints THEN it stops, exit 0, silent
    for args in [
        vec!["policy", "check", "infra/policies.yaml"],
        vec!["policy", "check", "infra/policies.yaml", "--output", "json"],
        vec!["policy", "check", "--guardrails"],
        vec!["policy", "explain", "--event", "events/verified-job-started.json"],
        vec!["completions", "bash"],
        vec!["man"],
        vec!["--help"],
    ] {
        let (code, err) = run_into_closed_pipe(&args);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!((code, err.as_str()), (Some(0), ""), "{args:?}");
    }
}

#[test]
fn latch_dev_ends_quietly_when_its_reader_goes() {
    require_emulator();
    let id = unique("p");
    let (table, bus) = (format!("latch-{id}"), format!("latch-{id}"));
    let (code, err) = run_into_closed_pipe(&["dev", "--table", &table, "--bus", &bus, "--stop-after", "60s"]);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn every_subcommand_has_help_a_newcomer_can_follow() {
    for (args, expect) in [
        (vec!["--help"], "just-in-time"),
        (vec!["demo", "--help"], "timeline"),
        (vec!["dev", "--help"], "--expire-ttl"),
        (vec!["request", "--help"], "3 if denied"),
        (vec!["release", "--help"], "End this job's grants now"),
        (vec!["request", "--help"], "--token-file"),
        (vec!["request", "--help"], "session: <name>"),
        (vec!["extend", "--help"], "--by"),
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

#[test]
fn completions_and_the_manual_page_come_from_the_same_definitions_as_help() {
    let subcommands = [
        "demo", "dev", "request", "extend", "release", "policy", "audit", "doctor",
    ];
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, out, err) = run(latch().args(["completions", shell]));
        assert_eq!(code, 0, "{shell}: {err}");
        for sub in subcommands {
            assert!(out.contains(sub), "{shell} completions lack {sub}");
        }
    }
    let (code, page, err) = run(latch().arg("man"));
    assert_eq!(code, 0, "{err}");
    assert!(page.starts_with(".ie") && page.contains(".TH latch 1"), "{page}");
    for sub in subcommands {
        assert!(page.contains(&format!("latch\\-{sub}")), "the manual page lacks {sub}");
    }
    let (code, _, _) = run(latch().args(["completions", "tcsh"]));
    assert_eq!(code, 2, "an unknown shell is a usage error");
}

/// `latch dev` in the background on its own table, bus and role names.
struct Dev {
    child: Child,
    id: String,
    table: String,
    bus: String,
    role: String,
    /// The dev token endpoint (GitHub Actions' token request) and its bearer.
    token_url: String,
    token_secret: String,
}

/// Every byte but letters and digits as %XX, for a query string.
fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Dev {
    /// GitHub Actions' token-request variables, answering for `issuer` with `claims`.
    fn github_env(&self, claims: serde_json::Value) -> Vec<(&'static str, String)> {
        vec![
            (
                "ACTIONS_ID_TOKEN_REQUEST_URL",
                format!(
                    "{}?issuer=github&claims={}",
                    self.token_url,
                    url_encode(&claims.to_string())
                ),
            ),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", self.token_secret.clone()),
        ]
    }

    /// A token from the dev endpoint, as a CI puts one in LATCH_ID_TOKEN.
    fn token(&self, issuer: &str, claims: serde_json::Value) -> String {
        use std::io::{Read, Write};
        let rest = self.token_url.strip_prefix("http://").unwrap();
        let (host, path) = rest.split_once('/').unwrap();
        let mut s = std::net::TcpStream::connect(host).unwrap();
        write!(
            s,
            "GET /{path}?issuer={issuer}&claims={} HTTP/1.1\r\nHost: {host}\r\nAuthorization: bearer {}\r\nConnection: close\r\n\r\n",
            url_encode(&claims.to_string()),
            self.token_secret
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        let body = answer.split_once("\r\n\r\n").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
        v["value"].as_str().unwrap_or_else(|| panic!("{answer}")).to_owned()
    }
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
    let mut child = latch()
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
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Provisioned and listening once it prints its token endpoint; the rest is drained.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("ACTIONS_ID_TOKEN_REQUEST_URL=") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("latch dev prints its token endpoint");
    let value = |name: &str| {
        let at = line.find(name).unwrap() + name.len();
        line[at..]
            .split_whitespace()
            .next()
            .unwrap()
            .trim_matches('\'')
            .to_owned()
    };
    let token_url = value("ACTIONS_ID_TOKEN_REQUEST_URL=").replace("?issuer=github", "");
    let token_secret = value("ACTIONS_ID_TOKEN_REQUEST_TOKEN=");
    let role = format!("arn:aws:iam::123456789012:role/latch/{id}-app-deployer");
    Dev {
        child,
        id,
        table,
        bus,
        role,
        token_url,
        token_secret,
    }
}

fn request(dev: &Dev, run_id: &str, set: &str, extra: &[&str]) -> (i32, String, String) {
    run(latch()
        .envs(dev.github_env(serde_json::json!({"run_id": run_id})))
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
    // The client probed with the role's own credentials (assumed: it publishes as another
    // principal) rather than sleeping a fixed time; the emulator applies at once.
    assert!(err.contains("IAM applies the grant to "), "{err}");

    let (code, _, err) = request(&dev, &run_id, "db-migrate", &["--wait", "--timeout", "30s"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("denied: permission_set_not_allowed"), "{err}");

    let (code, _, err) = run(latch()
        .envs(dev.github_env(serde_json::json!({"run_id": run_id})))
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
    assert!(
        err.contains("with the CI's ID token") || err.contains("released"),
        "{err}"
    );
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
fn dev_archives_every_audit_record_as_the_deployed_stack_does() {
    // GIVEN latch dev, and a grant and a denial decided through it
    let dev = start_dev();
    let run_id = unique("a");
    let (code, out, err) = request(&dev, &run_id, "deploy-artifacts", &["--wait", "--timeout", "30s"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = request(&dev, &run_id, "db-migrate", &["--wait", "--timeout", "30s"]);
    assert_eq!(code, 3, "{err}");
    // WHEN the archive bucket is read back
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bucket = format!("{}-archive", dev.table);
    let deadline = Instant::now() + Duration::from_secs(30);
    let ours = loop {
        let lines = runtime.block_on(async {
            let sdk = latch_tests::sdk_config().await;
            latch_aws::archive::read_archive(&sdk, &bucket).await
        });
        let ours: Vec<(String, serde_json::Value)> = lines
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, line)| line.to_string().contains(&run_id))
            .collect();
        if ours.len() >= 2 || Instant::now() > deadline {
            break ours;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // THEN both decisions' audit items are there, each under its decision's date
    let decisions: std::collections::BTreeSet<&str> = ours
        .iter()
        .filter_map(|(_, l)| l["Item"]["decision"]["S"].as_str())
        .collect();
    assert!(
        decisions.contains("activated") && decisions.contains("denied"),
        "{ours:?}"
    );
    for (key, line) in &ours {
        let date = &line["Item"]["recorded_at"]["S"].as_str().unwrap()[..10];
        assert!(key.starts_with(&format!("audit/date={date}/")), "{key}");
    }
}

#[test]
fn request_and_release_answer_in_json_for_scripts() {
    let dev = start_dev();
    let run_id = unique("j");
    let json = |out: &str| -> serde_json::Value {
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"))
    };
    // GIVEN --output json WHEN the grant is active THEN stdout is one object scripts can read
    let (code, out, err) = request(&dev, &run_id, "deploy-artifacts", &["--wait", "--output", "json"]);
    assert_eq!(code, 0, "{out}{err}");
    let active = json(&out);
    assert_eq!(active["outcome"], "active", "{active}");
    assert_eq!(active["grant_id"].as_str().map(str::len), Some(32), "{active}");
    assert!(active["role"].as_str().unwrap().ends_with("app-deployer"), "{active}");
    assert!(active["expires_at"].as_str().unwrap().ends_with('Z'), "{active}");
    assert!(
        active["policy_name"].as_str().unwrap().starts_with("latch-"),
        "{active}"
    );
    // AND a denial says why, with the exit code
    let (code, out, _) = request(&dev, &run_id, "db-migrate", &["--wait", "--output", "json"]);
    assert_eq!(code, 3);
    let denied = json(&out);
    assert_eq!(
        (denied["outcome"].as_str(), denied["reason"].as_str()),
        (Some("denied"), Some("permission_set_not_allowed")),
        "{denied}"
    );
    // AND release answers with the event it published
    let (code, out, err) = run(latch()
        .envs(dev.github_env(serde_json::json!({"run_id": run_id})))
        .args([
            "release",
            "--source",
            "ci.github",
            "--bus",
            &dev.bus,
            "--output",
            "json",
        ])
        .args(["--pipeline", "app-release", "--run-id", &run_id, "--job", "deploy"]));
    assert_eq!(code, 0, "{err}");
    let released = json(&out);
    assert_eq!(released["outcome"], "released", "{released}");
    assert!(
        released["event_id"].as_str().is_some_and(|e| !e.is_empty()),
        "{released}"
    );
}

#[test]
fn doctor_checks_a_deployment_and_says_what_is_wrong() {
    let dev = start_dev();
    let policy = temp_file(
        "doctor-policies.yaml",
        &std::fs::read_to_string(repo().join("infra/policies.yaml"))
            .unwrap()
            .replace(":role/latch/", &format!(":role/latch/{}-", dev.id)),
    );
    let doctor = |extra: &[&str]| {
        run(latch()
            .args(["doctor", "--table", &dev.table, "--bus", &dev.bus, "--policy"])
            .arg(&policy)
            .args(extra))
    };
    // GIVEN what `latch dev` provisioned WHEN the doctor looks THEN table, bus and roles pass
    let (code, out, err) = doctor(&[]);
    assert_eq!(code, 0, "{out}{err}");
    for expect in [
        "ok   table",
        "TTL on `ttl`",
        "stream with old images",
        "routes pipeline events",
        "ok   role",
    ] {
        assert!(out.contains(expect), "{expect}: {out}");
    }
    // WHEN the deployment's boundary is given THEN roles without it fail, saying what follows
    let (code, out, _) = doctor(&["--boundary", "arn:aws:iam::123456789012:policy/latch-boundary"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL role") && out.contains("role_without_boundary"),
        "{out}"
    );
    // WHEN the table is not there THEN it says so
    let (code, out, _) = run(latch()
        .args([
            "doctor",
            "--table",
            "latch-no-such-table",
            "--bus",
            &dev.bus,
            "--policy",
        ])
        .arg(&policy));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL table latch-no-such-table"), "{out}");
}

#[test]
fn init_writes_a_starter_that_passes_policy_check_and_names_only_the_templates_parameters() {
    let template = yaml("template.yaml");
    let parameters = template["Parameters"].as_mapping().unwrap();
    for ci in [["--github-org", "acme"], ["--gitlab-group", "acme/platform"]] {
        // GIVEN a fresh directory WHEN latch init runs with flags only
        let dir = std::env::temp_dir().join(unique("init"));
        let (code, _, err) = run(latch()
            .args(["init", "--account", "123456789012"])
            .args(ci)
            .arg("--out")
            .arg(&dir)
            .stdin(Stdio::null()));
        assert_eq!(code, 0, "{err}");
        // THEN its policy file passes the check the functions make
        let (code, _, err) = run(latch().args(["policy", "check"]).arg(dir.join("policies.yaml")));
        assert_eq!(code, 0, "{ci:?}: {err}");
        // AND its samconfig overrides only parameters the template has
        let samconfig = std::fs::read_to_string(dir.join("samconfig.toml")).unwrap();
        let overrides = samconfig
            .lines()
            .find_map(|l| l.strip_prefix("parameter_overrides = "))
            .unwrap()
            .trim_matches('"');
        for pair in overrides.split(' ') {
            let name = pair.split_once('=').unwrap().0;
            assert!(parameters.contains_key(name), "{name} is not a template parameter");
        }
        // AND a second run does not overwrite what is there
        let (code, _, err) = run(latch()
            .args(["init", "--account", "123456789012"])
            .args(ci)
            .arg("--out")
            .arg(&dir)
            .stdin(Stdio::null()));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("--force"), "{err}");
    }
    // WHEN nothing is given and there is no terminal to ask THEN it says which flag is missing
    let (code, _, err) = run(latch().arg("init").stdin(Stdio::null()));
    assert_eq!(code, 2);
    assert!(err.contains("AWS account id"), "{err}");
}

fn unrouted_request(dev: &Dev, source: &str, bus: &str) -> (i32, String, String) {
    run(latch()
        .args(["request", "--source", source, "--bus", bus, "--table", &dev.table])
        .args(["--pipeline", "p", "--run-id", &unique("r"), "--job", "j"])
        .args(["--role", &dev.role, "--no-token"])
        .args(["--permission-set", "deploy-artifacts", "--duration", "5m"])
        .args(["--wait", "--timeout", "10s"]))
}

#[test]
fn a_source_no_rule_trusts_is_denied_locally_as_in_aws_not_lost() {
    // GIVEN `latch dev`, whose bus routes pipeline events as the stack's rule does
    let dev = start_dev();
    // WHEN a publisher no rule trusts asks
    let (code, _, err) = unrouted_request(&dev, "ci.unrouted", &dev.bus);
    // THEN the grant function hears it and says why not (before: it vanished, and --wait timed out)
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("denied: "), "{err}");
}

#[test]
fn request_times_out_when_nothing_decides() {
    let dev = start_dev();
    // The account's default bus: no Latch listens there, no decision will ever come.
    let (code, _, err) = unrouted_request(&dev, "ci.github", "default");
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("timed out"), "{err}");
}

#[test]
fn request_without_a_token_says_how_to_get_one_and_never_prints_one() {
    let (code, _, err) = run(latch()
        .env_remove("LATCH_ID_TOKEN")
        .env_remove("ACTIONS_ID_TOKEN_REQUEST_URL")
        .args([
            "request",
            "--source",
            "ci.github",
            "--pipeline",
            "p",
            "--run-id",
            "1",
            "--job",
            "j",
        ])
        .args([
            "--role",
            "arn:aws:iam::123456789012:role/latch/x",
            "--permission-set",
            "s",
            "--duration",
            "5m",
        ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("id-token: write") && err.contains("--no-token"), "{err}");

    // A detail flag that contradicts the token is refused before anything is published, and
    // neither message shows the token.
    let dev = start_dev();
    let token = dev.token("github", serde_json::json!({"run_id": "41"}));
    let (code, out, err) = run(latch()
        .env("LATCH_ID_TOKEN", &token)
        .args([
            "request",
            "--source",
            "ci.github",
            "--bus",
            &dev.bus,
            "--issuer-kind",
            "github",
        ])
        .args(["--run-id", "42", "--job", "deploy", "--role", &dev.role])
        .args(["--permission-set", "deploy-artifacts", "--duration", "5m"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("claim_mismatch"), "{err}");
    assert!(!out.contains(&token) && !err.contains(&token));
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
        "issuer github → local development issuer http://127.0.0.1:",
        "GRANTED by the policy to the verified job",
        "\"aws:CurrentTime\"",
        "DENIED: permission_set_not_allowed",
        "DENIED: claim_mismatch",
        "DENIED: field_mismatch",
        "finish refused: finish_not_proven",
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
    let action_steps = action["runs"]["steps"].as_sequence().unwrap();
    let step = |id: &str| action_steps.iter().find(|s| as_str(&s["id"]) == id).unwrap();
    // The binary comes from a release, checksum verified (scripts/checks/release.sh runs it).
    assert!(as_str(&step("install")["run"]).contains("install-latch.sh"));
    let mut command = as_str(&step("request")["run"]).to_owned();
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
            "settle" => "0s".into(),
            _ => value,
        };
        command = command.replace(&format!("${{{{ inputs.{name} }}}}"), &value);
    }
    assert!(!command.contains("${{"), "every input is filled: {command}");
    let run_id = unique("");
    let output = temp_file("github_output", "");
    let mut github = vec![
        ("GITHUB_ACTIONS", "true".to_owned()),
        ("GITHUB_OUTPUT", output.display().to_string()),
        ("GITHUB_REPOSITORY", "example-org/app-release".to_owned()),
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
    github.extend(dev.github_env(serde_json::json!({"run_id": run_id})));
    let (code, out, err) = run_step(&command, &github);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("active: grant"), "{out}");
    // The rule does not bind sessions: the step's `session` output is empty.
    let outputs = std::fs::read_to_string(&output).unwrap();
    assert!(outputs.lines().any(|l| l == "session="), "{outputs}");
    assert!(
        err.contains("as app-release/"),
        "the pipeline is the repository's name: {err}"
    );

    let release_cmd = as_str(&release["run"]).replace("${{ job.status }}", "failure");
    let (code, _, err) = run_step(&release_cmd, &github);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("released app-release/{run_id}/deploy#1")),
        "{err}"
    );

    // GIVEN "Re-run jobs": the same run id, GITHUB_RUN_ATTEMPT 2 (and the token's run_attempt)
    let mut rerun: Vec<_> = github
        .iter()
        .filter(|(k, _)| !k.starts_with("ACTIONS_ID_TOKEN"))
        .map(|(k, v)| {
            (
                *k,
                if *k == "GITHUB_RUN_ATTEMPT" {
                    "2".to_owned()
                } else {
                    v.clone()
                },
            )
        })
        .collect();
    rerun.extend(dev.github_env(serde_json::json!({"run_id": run_id, "run_attempt": "2"})));
    // WHEN it asks again THEN the second attempt gets a grant of its own
    let (code, out, err) = run_step(&command, &rerun);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("active: grant"), "{out}");
    let (code, _, err) = run_step(&release_cmd, &rerun);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("released app-release/{run_id}/deploy#2")),
        "{err}"
    );
}

#[test]
fn the_gitlab_job_requests_waits_and_releases() {
    let ci = yaml("examples/gitlab/.gitlab-ci.yml");
    let job = &ci["deploy"];
    assert_eq!(as_str(&job["id_tokens"]["AWS_OIDC_TOKEN"]["aud"]), "sts.amazonaws.com");
    let policy = yaml("infra/policies.yaml");
    let gitlab_issuer = policy["issuers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|i| as_str(&i["name"]) == "gitlab")
        .unwrap();
    assert_eq!(
        as_str(&job["id_tokens"]["LATCH_ID_TOKEN"]["aud"]),
        as_str(&gitlab_issuer["exact_audience"]),
        "the job's Latch token carries the audience the policy's gitlab issuer expects"
    );
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
    let job_id = format!("{run_id}7");
    let token = dev.token(
        "gitlab",
        serde_json::json!({"pipeline_id": run_id, "job_id": job_id, "project_path": "example-group/platform-tools"}),
    );
    let gitlab = vec![
        ("GITLAB_CI", "true".to_owned()),
        ("CI_PROJECT_NAME", "Platform Tools".to_owned()),
        ("CI_PROJECT_PATH", "example-group/platform-tools".to_owned()),
        ("CI_PIPELINE_ID", run_id.clone()),
        ("CI_JOB_NAME", "deploy".to_owned()),
        ("CI_JOB_ID", job_id.clone()),
        ("LATCH_ID_TOKEN", token),
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
    assert!(err.contains(&format!("as platform-tools/{run_id}/{job_id}#1")), "{err}");
    let (code, _, err) = run_step(release, &gitlab);
    assert_eq!(code, 0, "{err}");

    // GIVEN the job retried: GitLab gives the retry a new CI_JOB_ID (and its token that job_id)
    let retry_id = format!("{run_id}8");
    let retry_token = dev.token(
        "gitlab",
        serde_json::json!({"pipeline_id": run_id, "job_id": retry_id, "project_path": "example-group/platform-tools"}),
    );
    let retry: Vec<_> = gitlab
        .iter()
        .map(|(k, v)| match *k {
            "CI_JOB_ID" => (*k, retry_id.clone()),
            "LATCH_ID_TOKEN" => (*k, retry_token.clone()),
            _ => (*k, v.clone()),
        })
        .collect();
    // WHEN it asks again THEN it gets a fresh grant, not the finished job's record
    let (code, out, err) = run_step(&request, &retry);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("active: grant"), "{out}");
    assert!(
        err.contains(&format!("as platform-tools/{run_id}/{retry_id}#1")),
        "{err}"
    );
    let (code, _, err) = run_step(release, &retry);
    assert_eq!(code, 0, "{err}");
}

fn create_role(name: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sdk = latch_aws::config::sdk_loader().load().await;
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
