use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::event::{Envelope, StartRequest};
use crate::grant::DenyReason;
use crate::model::AccountId;

const EXAMPLE: &str = include_str!("../../../../events/policy-claimed.yaml");

/// The claimed-identity fixture: the claims-narrowing logic these tests pin down.
fn example() -> Policy {
    Policy::load(EXAMPLE, "events/policy-claimed.yaml").expect("the claimed fixture loads")
}

fn envelope(source: &str) -> Envelope {
    Envelope {
        id: "evt-1".into(),
        detail_type: "Pipeline Job Started".into(),
        source: source.into(),
        account: AccountId::parse("123456789012").unwrap(),
        region: "us-east-1".into(),
        time: Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap(),
    }
}

fn request(overrides: Value) -> StartRequest {
    let mut d = json!({
        "pipeline": "app-release", "run_id": "1", "job": "deploy", "attempt": 1,
        "role_arn": "arn:aws:iam::123456789012:role/latch/app-deployer",
        "permission_set": "deploy-artifacts", "duration": "15m", "ref": "refs/heads/main"
    });
    for (k, v) in overrides.as_object().unwrap() {
        d[k] = v.clone();
    }
    StartRequest::parse(&d, 100).unwrap()
}

fn problems(text: &str) -> Vec<Problem> {
    Policy::load(text, "p.yaml").unwrap_err().problems
}

#[test]
fn given_the_worked_example_when_loaded_then_its_sets_and_rules_are_there() {
    let p = example();
    assert_eq!(p.permission_sets.len(), 3);
    assert_eq!(p.rules.len(), 3);
    assert_eq!(p.elevatable_path, "/latch/");
}

#[test]
fn given_an_allowed_request_when_decided_then_the_rule_is_named() {
    let p = example();
    let allowed = p.decide(&envelope("ci.github"), &request(json!({})), None).unwrap();
    assert_eq!(allowed.rule.as_str(), "app-release-deploys");
    assert_eq!(allowed.permission_set.name.as_str(), "deploy-artifacts");
}

#[test]
fn given_requests_outside_the_rules_when_decided_then_each_gets_its_reason() {
    let p = example();
    let gh = envelope("ci.github");
    let cases = [
        (envelope("ci.unknown"), json!({}), DenyReason::NoMatchingRule),
        (gh.clone(), json!({"pipeline": "other"}), DenyReason::NoMatchingRule),
        (
            gh.clone(),
            json!({"ref": "refs/heads/feature"}),
            DenyReason::FieldMismatch,
        ),
        (gh.clone(), json!({"ref": null}), DenyReason::FieldMismatch),
        (
            gh.clone(),
            json!({"role_arn": "arn:aws:iam::123456789012:role/admin"}),
            DenyReason::RoleNotEligible,
        ),
        (
            gh.clone(),
            json!({"role_arn": "arn:aws:iam::123456789012:role/latch/other"}),
            DenyReason::RoleNotEligible,
        ),
        (
            gh.clone(),
            json!({"role_arn": "arn:aws:iam::210987654321:role/latch/app-deployer"}),
            DenyReason::RoleNotEligible,
        ),
        (
            gh.clone(),
            json!({"permission_set": "nope"}),
            DenyReason::PermissionSetUnknown,
        ),
        (
            gh.clone(),
            json!({"role_arn": "arn:aws:iam::123456789012:role/latch/app-deployer", "permission_set": "db-migrate"}),
            DenyReason::PermissionSetNotAllowed,
        ),
        (gh.clone(), json!({"duration": "25m"}), DenyReason::DurationOverMax),
        (
            gh.clone(),
            json!({"permission_set": "lambda-deploy", "duration": "16m"}),
            DenyReason::DurationOverMax,
        ),
        (
            gh.clone(),
            json!({"role_arn": "arn:aws:iam::123456789012:role/latch/db-migrator", "permission_set": "db-migrate", "environment": "staging"}),
            DenyReason::FieldMismatch,
        ),
    ];
    for (env, overrides, want) in cases {
        let got = p
            .decide(&env, &request(overrides.clone()), None)
            .map(|a| a.rule.to_string())
            .map_err(|refusal| refusal.reason);
        assert_eq!(got, Err(want), "{overrides}");
    }
}

#[test]
fn given_a_start_without_environment_for_a_rule_that_requires_one_when_decided_then_the_denial_names_environment() {
    // GIVEN the db-migrator role, which only prod-migrations lists, and it requires an environment
    let p = example();
    let r = request(json!({"role_arn": "arn:aws:iam::123456789012:role/latch/db-migrator",
                           "permission_set": "db-migrate", "duration": "5m"}));
    // WHEN a start that names no environment is decided
    let refusal = p.decide(&envelope("ci.github"), &r, None).unwrap_err();
    // THEN the requester is pointed at the missing field, not at the role
    assert_eq!(refusal.reason, DenyReason::FieldMismatch);
    assert_eq!(
        refusal.detail.as_deref(),
        Some("environment: rule prod-migrations wants production; the request has none")
    );
}

#[test]
fn given_a_branch_the_rule_does_not_allow_when_decided_then_the_denial_names_the_ref_and_the_branch() {
    // GIVEN app-release-deploys, which allows main and release tags
    let p = example();
    // WHEN a feature branch asks for its role and set
    let r = request(json!({"ref": "refs/heads/feature-x"}));
    let refusal = p.decide(&envelope("ci.github"), &r, None).unwrap_err();
    // THEN the denial names the field and the branch that did not match
    assert_eq!(refusal.reason, DenyReason::FieldMismatch);
    let detail = refusal.detail.unwrap_or_default();
    assert!(
        detail.starts_with("ref: rule app-release-deploys wants refs/heads/main or refs/tags/v*"),
        "{detail}"
    );
    assert!(detail.ends_with("the request has \"refs/heads/feature-x\""), "{detail}");
}

#[test]
fn given_a_field_mismatch_on_a_rule_that_does_not_list_the_role_when_decided_then_no_field_is_named() {
    // GIVEN a ref no rule allows, for a role only prod-migrations lists (with an environment)
    let p = example();
    let r = request(json!({"role_arn": "arn:aws:iam::123456789012:role/latch/app-deployer",
                           "permission_set": "db-migrate", "ref": "refs/heads/feature"}));
    // WHEN decided
    let refusal = p.decide(&envelope("ci.github"), &r, None).unwrap_err();
    // THEN changing the field would not help, so the reason stays about the rule
    assert_eq!(refusal, DenyReason::NoMatchingRule.into());
}

#[test]
fn given_a_claimed_environment_when_the_rule_narrows_on_it_then_only_that_one_passes() {
    let p = example();
    let r = request(json!({"role_arn": "arn:aws:iam::123456789012:role/latch/db-migrator",
                           "permission_set": "db-migrate", "duration": "5m", "environment": "production"}));
    assert_eq!(
        p.decide(&envelope("ci.github"), &r, None).unwrap().rule.as_str(),
        "prod-migrations"
    );
}

const MINIMAL: &str = r#"version: 1
permission_sets:
  s:
    description: d
    max_duration: 10m
    statements:
      - actions: [s3:GetObject]
        resources: ["arn:aws:s3:::b/${pipeline}/*"]
rules:
  - name: r
    sources: [ci]
    accounts: ["123456789012"]
    pipelines: ["*"]
    roles: ["arn:aws:iam::123456789012:role/latch/x"]
    permission_sets: [s]
    max_duration: 10m
    identity: claimed
"#;

#[test]
fn given_an_unknown_key_when_loaded_then_the_error_has_line_and_column() {
    let text = MINIMAL.replace(
        "    max_duration: 10m\n    statements",
        "    max_duraton: 10m\n    statements",
    );
    let p = problems(&text);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].line, Some(5));
    assert!(p[0].column.is_some());
    assert!(p[0].message.contains("max_duraton"), "{}", p[0].message);
}

#[test]
fn given_semantic_errors_when_loaded_then_all_are_reported_at_their_lines() {
    let text = MINIMAL
        .replace("permission_sets: [s]", "permission_sets: [s, ghost]")
        .replace("role/latch/x", "role/admins/x");
    let err = Policy::load(&text, "p.yaml").unwrap_err();
    let rendered = err.to_string();
    assert_eq!(err.problems.len(), 2, "{rendered}");
    assert!(rendered.contains("p.yaml:14: rule r: role"), "{rendered}");
    assert!(rendered.contains("outside the elevatable path"), "{rendered}");
    assert!(
        rendered.contains("p.yaml:15: rule r: unknown permission set \"ghost\""),
        "{rendered}"
    );
}

#[test]
fn given_dangerous_statements_when_loaded_then_guardrails_refuse_them_unless_opted_in() {
    for (actions, resources, guardrail) in [
        ("[\"*\"]", "[\"*\"]", "wildcard_action"),
        ("[\"*:Get*\"]", "[\"*\"]", "wildcard_action"),
        ("[\"iam:*\"]", "[\"*\"]", "iam_wildcard"),
        (
            "[\"iam:Put*\"]",
            "[\"arn:aws:iam::123456789012:role/x\"]",
            "iam_wildcard",
        ),
    ] {
        let text = MINIMAL
            .replace("actions: [s3:GetObject]", &format!("actions: {actions}"))
            .replace(
                "resources: [\"arn:aws:s3:::b/${pipeline}/*\"]",
                &format!("resources: {resources}"),
            );
        let p = problems(&text);
        assert!(
            p.iter().any(|p| p.message.contains(guardrail) && p.line.is_some()),
            "{guardrail}: {p:?}"
        );
        // The shape excepted, and every escalation method it reaches (the catalogue's own tests
        // say which): the shape guardrail alone no longer refuses it.
        let every_method: Vec<&str> = CATALOGUE.iter().map(|m| m.name).collect();
        let opted = text.replace(
            "    max_duration: 10m\n    statements",
            &format!(
                "    max_duration: 10m\n    guardrail_exceptions: [{guardrail}]\n    allow_escalation: [{}]\n    statements",
                every_method.join(", ")
            ),
        );
        assert!(Policy::load(&opted, "p.yaml").is_ok(), "{guardrail} opt-in");
    }
    let not_action = MINIMAL.replace("actions: [s3:GetObject]", "not_actions: [s3:DeleteObject]");
    assert!(problems(&not_action).iter().any(|p| p.message.contains("not_action")));
}

#[test]
fn given_an_unknown_placeholder_or_reserved_condition_when_loaded_then_it_is_refused() {
    assert!(!problems(&MINIMAL.replace("${pipeline}", "${branch}")).is_empty());
    let reserved = MINIMAL.replace(
        "        resources: [\"arn:aws:s3:::b/${pipeline}/*\"]",
        "        resources: [\"arn:aws:s3:::b/${pipeline}/*\"]\n        conditions:\n          DateLessThan:\n            aws:CurrentTime: \"2030-01-01T00:00:00Z\"",
    );
    assert!(problems(&reserved).iter().any(|p| p.message.contains("reserved")));
}

fn expires() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 15, 0).unwrap()
}

fn ctx<'a>(pipeline: &'a str, job: &'a str) -> RenderContext<'a> {
    RenderContext {
        pipeline,
        job,
        account: "123456789012",
        region: "us-east-1",
        session: None,
    }
}

#[test]
fn given_a_set_with_its_own_conditions_when_rendered_then_expiry_is_merged_not_replacing() {
    let p = example();
    let set = &p.permission_sets[&crate::model::Name::parse("deploy-artifacts").unwrap()];
    let doc = set.render(&ctx("app-release", "deploy"), expires()).unwrap();
    let v: Value = serde_json::from_str(doc.as_json()).unwrap();
    assert_eq!(
        v["Statement"][0]["Resource"][0],
        "arn:aws:s3:::latch-artifacts-123456789012/app-release/*"
    );
    assert_eq!(
        v["Statement"][1]["Condition"]["StringLike"]["s3:prefix"][0],
        "app-release/*"
    );
    for st in v["Statement"].as_array().unwrap() {
        assert_eq!(
            st["Condition"]["DateLessThan"]["aws:CurrentTime"],
            "2026-11-25T12:15:00Z"
        );
    }
    assert!(!doc.as_json().contains(char::is_whitespace));
    assert_eq!(doc.sha256().len(), 64);
}

#[test]
fn given_a_hostile_placeholder_value_when_rendered_then_it_is_refused() {
    let p = example();
    let set = &p.permission_sets[&crate::model::Name::parse("deploy-artifacts").unwrap()];
    for bad in ["*", "app?", "a/b", "a:b", "ａpp", "", "${account}", &"x".repeat(129)] {
        assert_eq!(
            set.render(&ctx(bad, "deploy"), expires()),
            Err(RenderError::UnsafePlaceholderValue {
                placeholder: "pipeline"
            }),
            "{bad:?}"
        );
    }
}

#[test]
fn given_a_huge_set_when_rendered_then_it_is_refused_as_too_large() {
    let actions: Vec<String> = (0..800).map(|i| format!("s3:Action{i:04}")).collect();
    let text = MINIMAL.replace("actions: [s3:GetObject]", &format!("actions: [{}]", actions.join(", ")));
    let p = Policy::load(&text, "p.yaml").unwrap();
    let set = p.permission_sets.values().next().unwrap();
    assert!(
        matches!(set.render(&ctx("p", "j"), expires()), Err(RenderError::TooLarge { chars }) if chars > MAX_POLICY_CHARS)
    );
}

fn arb_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_.+=@-]{1,40}",
        "[A-Za-z0-9*?:/${}\\[\\] ._-]{0,40}",
        any::<String>(),
    ]
}

fn arb_set() -> impl Strategy<Value = (Vec<String>, Vec<String>)> {
    let action = "[a-z0-9]{2,10}:[A-Z][A-Za-z*]{0,12}";
    let resource = prop_oneof![
        Just("arn:aws:s3:::bucket/${pipeline}/*".to_owned()),
        Just("arn:aws:lambda:${region}:${account}:function:${pipeline}-${job}".to_owned()),
        "arn:aws:[a-z]{2,5}:::[a-z0-9*/-]{1,20}",
    ];
    (
        prop::collection::vec(action, 1..5),
        prop::collection::vec(resource, 1..4),
    )
}

fn yaml_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", ")
    )
}

proptest! {
    /// For any accepted set and any event values: valid IAM JSON, the expiry condition on every
    /// statement, exactly the set's actions, and resources that differ from their templates only
    /// by safe placeholder values (never a new wildcard or ARN segment).
    #[test]
    fn rendered_documents_never_exceed_their_permission_set(
        (actions, resources) in arb_set(),
        pipeline in arb_value(),
        job in arb_value(),
    ) {
        let text = MINIMAL
            .replace("actions: [s3:GetObject]", &format!("actions: {}", yaml_list(&actions)))
            .replace("resources: [\"arn:aws:s3:::b/${pipeline}/*\"]", &format!("resources: {}", yaml_list(&resources)));
        let Ok(policy) = Policy::load(&text, "p.yaml") else { return Ok(()) };
        let set = policy.permission_sets.values().next().unwrap();
        match set.render(&ctx(&pipeline, &job), expires()) {
            Err(RenderError::UnsafePlaceholderValue { .. }) => {
                let used_unsafe = resources.iter().any(|r|
                    (r.contains("${pipeline}") && !is_safe_placeholder_value(&pipeline)) ||
                    (r.contains("${job}") && !is_safe_placeholder_value(&job)));
                prop_assert!(used_unsafe);
            }
            Err(RenderError::TooLarge { .. }) => prop_assert!(false, "small sets never exceed the limit"),
            Ok(doc) => {
                let v: Value = serde_json::from_str(doc.as_json()).unwrap();
                prop_assert_eq!(&v["Version"], "2012-10-17");
                let statements = v["Statement"].as_array().unwrap();
                prop_assert_eq!(statements.len(), 1);
                let st = &statements[0];
                prop_assert_eq!(&st["Condition"]["DateLessThan"]["aws:CurrentTime"], "2026-11-25T12:15:00Z");
                let got_actions: Vec<String> = serde_json::from_value(st["Action"].clone()).unwrap();
                prop_assert_eq!(got_actions, actions.clone());
                let got: Vec<String> = serde_json::from_value(st["Resource"].clone()).unwrap();
                prop_assert_eq!(got.len(), resources.len());
                for (rendered, template) in got.iter().zip(&resources) {
                    let wild = |s: &str| s.matches(['*', '?', ':', '/']).count();
                    let template_literal = template.replace("${pipeline}", "").replace("${job}", "")
                        .replace("${account}", "").replace("${region}", "");
                    prop_assert_eq!(wild(rendered), wild(&template_literal), "{} from {}", rendered, template);
                }
            }
        }
    }
}

mod native {
    use super::*;
    use crate::native::{NativeJob, SOURCE_CODEBUILD, SOURCE_CODEPIPELINE};

    fn action(pipeline: &str, stage: &str, action: &str) -> NativeJob {
        NativeJob::CodePipelineAction {
            pipeline: pipeline.into(),
            execution_id: "3137f7cb-7cf7-4a17-9d57-1a2b3c4d5e6f".into(),
            stage: stage.into(),
            action: action.into(),
        }
    }

    fn build(project: &str) -> NativeJob {
        NativeJob::CodeBuild {
            project: project.into(),
            build_id: "8745a7a9-c340-456a-9166-edf953571bef".into(),
        }
    }

    fn with_native(native: &str) -> String {
        format!(
            "version: 1\npermission_sets:\n  s:\n    description: d\n    max_duration: 30m\n    statements:\n      \
             - actions: [s3:GetObject]\n        resources: [\"arn:aws:s3:::b/${{pipeline}}/*\"]\nnative:\n{native}"
        )
    }

    #[test]
    fn given_the_worked_example_when_a_named_action_starts_then_its_rule_gives_role_set_and_duration() {
        let p = example();
        assert_eq!(p.native.len(), 2);
        let (request, allowed) = p
            .decide_native(
                &envelope(SOURCE_CODEPIPELINE),
                &action("app-release", "Deploy", "DeployLambda"),
            )
            .unwrap();
        assert_eq!(allowed.rule.as_str(), "codepipeline-release-deploy");
        assert_eq!(allowed.max_active_grants_per_role, Some(5));
        assert_eq!(
            request.role.as_str(),
            "arn:aws:iam::123456789012:role/latch/codepipeline-deployer"
        );
        assert_eq!(request.permission_set.as_str(), "lambda-deploy");
        assert_eq!(request.duration.as_secs(), 900);
        assert_eq!(request.job.job, "Deploy.DeployLambda");
        let (request, allowed) = p
            .decide_native(&envelope(SOURCE_CODEBUILD), &build("app-build"))
            .unwrap();
        assert_eq!(allowed.rule.as_str(), "codebuild-app-builds");
        assert_eq!(request.job.pipeline, "app-build");
    }

    #[test]
    fn given_jobs_no_native_rule_names_when_decided_then_they_are_denied() {
        let p = example();
        let cp = envelope(SOURCE_CODEPIPELINE);
        for job in [
            action("other-release", "Deploy", "DeployLambda"),
            action("app-release", "Build", "DeployLambda"),
            action("app-release", "Deploy", "Approve"),
        ] {
            assert_eq!(
                p.decide_native(&cp, &job).unwrap_err(),
                DenyReason::NoMatchingRule,
                "{job:?}"
            );
            assert!(!p.manages_native(&job), "its end is not Latch's business: {job:?}");
        }
        let other_account = Envelope {
            account: AccountId::parse("210987654321").unwrap(),
            ..envelope(SOURCE_CODEBUILD)
        };
        assert_eq!(
            p.decide_native(&other_account, &build("app-build")).unwrap_err(),
            DenyReason::NoMatchingRule,
            "a role in another account is never elevated"
        );
        assert_eq!(
            p.decide_native(&envelope(SOURCE_CODEPIPELINE), &build("app-build"))
                .unwrap_err(),
            DenyReason::UnsupportedEvent,
            "a build must come from aws.codebuild"
        );
        assert!(p.manages_native(&build("app-build")));
        assert!(!p.manages_native(&build("docs-build")));
    }

    #[test]
    fn given_native_roles_when_drift_repair_asks_then_they_are_eligible() {
        let p = example();
        let role = RoleArn::parse("arn:aws:iam::123456789012:role/latch/codebuild-app").unwrap();
        assert!(p.is_eligible_role(&role));
        assert!(p.exact_roles().contains(&role));
        assert!(!p.is_eligible_role(&RoleArn::parse("arn:aws:iam::123456789012:role/latch/unnamed").unwrap()));
    }

    #[test]
    fn given_bad_native_rules_when_loaded_then_each_problem_is_placed_and_explained() {
        let text = with_native(
            "  - name: both\n    codebuild: {project: a}\n    codepipeline: {pipeline: a, stage: b, action: c}\n    \
             role: arn:aws:iam::123456789012:role/latch/r\n    permission_set: s\n    duration: 5m\n\
             \x20 - name: outside\n    codebuild: {project: a}\n    role: arn:aws:iam::123456789012:role/admin\n    \
             permission_set: s\n    duration: 5m\n\
             \x20 - name: wild\n    codebuild: {project: a}\n    role: arn:aws:iam::123456789012:role/latch/*\n    \
             permission_set: s\n    duration: 5m\n\
             \x20 - name: unknown-set\n    codebuild: {project: a}\n    role: arn:aws:iam::123456789012:role/latch/r\n    \
             permission_set: nope\n    duration: 5m\n\
             \x20 - name: too-long\n    codebuild: {project: a}\n    role: arn:aws:iam::123456789012:role/latch/r\n    \
             permission_set: s\n    duration: 1h\n",
        );
        let found = problems(&text);
        let messages: Vec<&str> = found.iter().map(|p| p.message.as_str()).collect();
        for (expected, line) in [
            ("native rule both: give exactly one of codepipeline or codebuild", 10),
            (
                "native rule outside: role \"arn:aws:iam::123456789012:role/admin\" is outside",
                18,
            ),
            ("native rule wild: role \"arn:aws:iam::123456789012:role/latch/*\"", 23),
            ("native rule unknown-set: unknown permission set \"nope\"", 29),
            (
                "native rule too-long: duration 1h is over permission set s's max_duration 30m",
                35,
            ),
        ] {
            let p = found
                .iter()
                .find(|p| p.message.starts_with(expected))
                .unwrap_or_else(|| panic!("no problem {expected:?} in {messages:#?}"));
            assert_eq!(p.line, Some(line), "{expected}");
        }
        assert_eq!(found.len(), 5, "{messages:#?}");
    }
}

mod catalogue {
    use super::*;

    /// A file with one set `s` made of `statements` (YAML list items at set depth) and `extra`
    /// set fields, granted by a claimed rule whose pipelines are `pipelines`.
    fn file_with(statements: &str, extra: &str, pipelines: &str) -> String {
        format!(
            "version: 1\npermission_sets:\n  s:\n    description: d\n    max_duration: 10m\n{extra}    statements:\n{statements}\
             rules:\n  - name: r\n    identity: claimed\n    sources: [ci]\n    accounts: [\"123456789012\"]\n    \
             pipelines: {pipelines}\n    roles: [\"arn:aws:iam::123456789012:role/latch/x\"]\n    permission_sets: [s]\n    \
             max_duration: 10m\n"
        )
    }

    fn stmt(actions: &str, resources: &str) -> String {
        format!("      - actions: {actions}\n        resources: {resources}\n")
    }

    /// Each catalogued method, one set that uses it, and the other methods that set also uses.
    fn uses() -> Vec<(&'static str, String, &'static [&'static str])> {
        let role = "[\"arn:aws:iam::123456789012:role/app-fn\"]";
        let pass_on = |other: &str, on: &str| format!("{}{}", stmt("[iam:PassRole]", role), stmt(other, on));
        let pass = |other: &str| pass_on(other, "[\"*\"]");
        vec![
            (
                "iam-policy-versions",
                stmt(
                    "[iam:CreatePolicyVersion]",
                    "[\"arn:aws:iam::123456789012:policy/app\"]",
                ),
                &[],
            ),
            ("iam-attach-policies", stmt("[iam:AttachRolePolicy]", role), &[]),
            (
                "iam-inline-policies",
                stmt("[iam:PutRolePolicy]", "[\"arn:aws:iam::123456789012:role/latch/x\"]"),
                &[],
            ),
            (
                "iam-group-membership",
                stmt("[iam:AddUserToGroup]", "[\"arn:aws:iam::123456789012:group/admins\"]"),
                &[],
            ),
            (
                "iam-access-keys",
                stmt("[iam:CreateAccessKey]", "[\"arn:aws:iam::123456789012:user/*\"]"),
                &[],
            ),
            (
                "iam-login-profiles",
                stmt("[iam:UpdateLoginProfile]", "[\"arn:aws:iam::123456789012:user/alice\"]"),
                &[],
            ),
            ("iam-trust-policies", stmt("[iam:UpdateAssumeRolePolicy]", role), &[]),
            (
                "iam-permissions-boundaries",
                stmt("[iam:DeleteRolePermissionsBoundary]", role),
                &[],
            ),
            ("sts-assume-role-broad", stmt("[sts:AssumeRole]", "[\"*\"]"), &[]),
            (
                "passrole-broad",
                stmt("[iam:PassRole]", "[\"arn:aws:iam::123456789012:role/*\"]"),
                // Latch's own roles are among those `role/*` passes.
                &["latch-self-modification"],
            ),
            (
                "passrole-lambda",
                pass_on(
                    "[lambda:CreateFunction]",
                    "[\"arn:aws:lambda:us-east-1:123456789012:function:app-*\"]",
                ),
                &[],
            ),
            ("passrole-ec2", pass("[ec2:RunInstances]"), &[]),
            ("passrole-ecs", pass("[ecs:RegisterTaskDefinition]"), &[]),
            ("passrole-glue", pass("[glue:CreateJob]"), &[]),
            (
                "passrole-cloudformation",
                pass_on(
                    "[cloudformation:CreateStack]",
                    "[\"arn:aws:cloudformation:us-east-1:123456789012:stack/app-*\"]",
                ),
                &[],
            ),
            ("passrole-codebuild", pass("[codebuild:CreateProject]"), &[]),
            ("passrole-sagemaker", pass("[sagemaker:CreateTrainingJob]"), &[]),
            ("passrole-datapipeline", pass("[datapipeline:CreatePipeline]"), &[]),
            ("passrole-apprunner", pass("[apprunner:CreateService]"), &[]),
            (
                "lambda-code-update",
                stmt(
                    "[lambda:UpdateFunctionCode]",
                    "[\"arn:aws:lambda:us-east-1:123456789012:function:*\"]",
                ),
                &["latch-self-modification"],
            ),
            (
                "codebuild-existing-projects",
                stmt("[codebuild:StartBuild]", "[\"*\"]"),
                &[],
            ),
            (
                "cloudformation-existing-stacks",
                stmt("[cloudformation:UpdateStack]", "[\"*\"]"),
                &["latch-self-modification"],
            ),
            (
                "glue-dev-endpoints",
                stmt(
                    "[glue:UpdateDevEndpoint]",
                    "[\"arn:aws:glue:us-east-1:123456789012:devEndpoint/e\"]",
                ),
                &[],
            ),
            (
                "ec2-instance-takeover",
                stmt(
                    "[ec2:ModifyInstanceAttribute]",
                    "[\"arn:aws:ec2:us-east-1:123456789012:instance/i-1\"]",
                ),
                &[],
            ),
            (
                "ssm-command-execution",
                stmt("[ssm:SendCommand]", "[\"arn:aws:ec2:*:123456789012:instance/*\"]"),
                &[],
            ),
            (
                "sagemaker-notebook-access",
                stmt("[sagemaker:CreatePresignedNotebookInstanceUrl]", "[\"*\"]"),
                &[],
            ),
            (
                "latch-self-modification",
                stmt(
                    "[lambda:GetFunction]",
                    "[\"arn:aws:lambda:us-east-1:123456789012:function:latch-GrantFunction-AB12\"]",
                ),
                &[],
            ),
        ]
    }

    #[test]
    fn given_a_set_using_each_catalogued_method_when_loaded_then_it_is_refused_by_name_at_its_line_unless_excepted() {
        let cases = uses();
        for method in CATALOGUE {
            assert!(
                cases.iter().any(|(name, ..)| *name == method.name),
                "{} has no test",
                method.name
            );
        }
        for (name, statements, also) in cases {
            let text = file_with(&statements, "", "[app]");
            let problems = problems(&text);
            let p = problems
                .iter()
                .find(|p| p.message.contains(&format!("uses escalation method {name}")))
                .unwrap_or_else(|| panic!("{name} not refused: {problems:#?}"));
            let line = p.line.expect("placed");
            assert!(
                text.lines().nth(line - 1).is_some_and(|l| l.contains("actions:")),
                "{name} at line {line}"
            );
            assert!(
                p.hint
                    .as_deref()
                    .is_some_and(|h| h.contains(&format!("allow_escalation: [{name}]")))
            );

            let excepted: Vec<&str> = std::iter::once(name).chain(also.iter().copied()).collect();
            let opted = file_with(
                &statements,
                &format!("    allow_escalation: [{}]\n", excepted.join(", ")),
                "[app]",
            );
            let loaded = Policy::load(&opted, "p.yaml").unwrap_or_else(|e| panic!("{name} excepted: {e}"));
            let unneeded: Vec<_> = loaded
                .warnings
                .iter()
                .filter(|w| w.message.contains("allow_escalation"))
                .collect();
            assert!(unneeded.is_empty(), "{name}: {unneeded:?}");
        }
    }

    #[test]
    fn given_wildcard_and_not_action_statements_when_loaded_then_every_method_they_reach_is_named() {
        let named = |statements: &str| -> Vec<String> {
            let text = file_with(
                statements,
                "    guardrail_exceptions: [iam_wildcard, wildcard_action, not_action]\n",
                "[app]",
            );
            let found = Policy::load(&text, "p.yaml")
                .err()
                .map(|e| e.problems)
                .unwrap_or_default();
            CATALOGUE
                .iter()
                .filter(|m| {
                    found.iter().any(|p| {
                        p.message.contains(&format!("method {}:", m.name))
                            || p.message.contains(&format!("method {} (", m.name))
                    })
                })
                .map(|m| m.name.to_owned())
                .collect()
        };
        let create = named(&stmt("[\"iam:Create*\"]", "[\"arn:aws:iam::123456789012:user/bob\"]"));
        assert_eq!(create, ["iam-policy-versions", "iam-access-keys", "iam-login-profiles"]);
        let sts = named(&stmt("[\"sts:*\"]", "[\"arn:aws:iam::123456789012:role/*\"]"));
        assert_eq!(sts, ["sts-assume-role-broad"]);
        let everything = named(&stmt("[\"*\"]", "[\"*\"]"));
        assert_eq!(everything.len(), CATALOGUE.len(), "{everything:?}");
        let case_variant = named(&stmt(
            "[IAM:createpolicyversion]",
            "[\"arn:aws:iam::123456789012:policy/app\"]",
        ));
        assert_eq!(case_variant, ["iam-policy-versions"]);
        let all_but_iam = named("      - not_actions: [\"iam:*\"]\n        resources: [\"*\"]\n");
        assert!(
            !all_but_iam
                .iter()
                .any(|m| m.starts_with("iam-") || m.starts_with("passrole-")),
            "{all_but_iam:?}"
        );
        for m in [
            "sts-assume-role-broad",
            "lambda-code-update",
            "ssm-command-execution",
            "latch-self-modification",
        ] {
            assert!(all_but_iam.iter().any(|n| n == m), "{m} in {all_but_iam:?}");
        }
        let deny = named("      - effect: Deny\n        actions: [\"iam:*\"]\n        resources: [\"*\"]\n");
        assert!(deny.is_empty(), "a Deny grants nothing: {deny:?}");
    }

    #[test]
    fn given_a_rule_that_lets_pipeline_be_anything_or_latch_when_lambda_deploy_loads_then_the_takeover_is_refused() {
        let lambda_deploy = stmt(
            "[lambda:UpdateFunctionCode, lambda:PublishVersion, lambda:GetFunction]",
            "[\"arn:aws:lambda:${region}:${account}:function:${pipeline}-*\"]",
        );
        for pipelines in ["[\"*\"]", "[latch]", "[\"latch*\"]", "[\"{app,latch}\"]"] {
            let text = file_with(&lambda_deploy, "", pipelines);
            let err = Policy::load(&text, "p.yaml").unwrap_err().to_string();
            assert!(err.contains("uses escalation method latch-self-modification (rule r can render arn:aws:lambda:*:123456789012:function:"), "{pipelines}: {err}");
            assert!(err.starts_with("p.yaml:"), "{err}");
        }
        // The pipeline's own functions, under a pipeline glob that cannot be `latch`.
        assert!(Policy::load(&file_with(&lambda_deploy, "", "[\"app-*\"]"), "p.yaml").is_ok());
        let anything = Policy::load(&file_with(&lambda_deploy, "", "[\"*\"]"), "p.yaml")
            .unwrap_err()
            .to_string();
        assert!(anything.contains("lambda-code-update"), "{anything}");
    }

    #[test]
    fn given_a_verified_rule_when_its_worst_case_is_taken_then_the_pipeline_follows_the_bound_repository() {
        let example = Policy::load(include_str!("../../../../infra/policies.yaml"), "infra/policies.yaml").unwrap();
        let cases = example.worst_cases();
        let lambda = cases
            .iter()
            .find(|c| {
                c.rule.is_some_and(|r| r.as_str() == "app-release-deploys") && c.set.name.as_str() == "lambda-deploy"
            })
            .unwrap();
        assert_eq!(lambda.widest.pipeline, ["app-*"]);
        let doc = lambda.set.render_widest(&lambda.widest);
        assert_eq!(
            doc["Statement"][0]["Resource"][0],
            "arn:aws:lambda:*:123456789012:function:app-*-*"
        );
        assert_eq!(
            doc["Statement"][0]["Condition"]["DateLessThan"]["aws:CurrentTime"],
            "<expiry>"
        );
        let native = cases
            .iter()
            .find(|c| c.rule.is_some_and(|r| r.as_str() == "codepipeline-release-deploy"))
            .unwrap();
        assert_eq!(native.widest.job, ["Deploy.Deploy*"]);

        // A GitHub rule that binds only the owner: the repository name, hence the pipeline, is anything.
        let owner_only = include_str!("../../../../infra/policies.yaml").replace(
            "      repository: example-org/app-*\n      ref: [refs/heads/main, refs/tags/v*]",
            "      repository_owner: example-org\n      ref: [refs/heads/main, refs/tags/v*]",
        );
        let err = Policy::load(&owner_only, "p.yaml").unwrap_err().to_string();
        assert!(err.contains("permission set lambda-deploy, statement 1: \"lambda:UpdateFunctionCode\" uses escalation method lambda-code-update (rule app-release-deploys can render arn:aws:lambda:*:123456789012:function:*-*)"), "{err}");
    }

    #[test]
    fn given_an_unknown_or_unneeded_exception_when_loaded_then_it_is_refused_or_warned() {
        let s3 = stmt("[s3:GetObject]", "[\"arn:aws:s3:::b/*\"]");
        let unknown = problems(&file_with(&s3, "    allow_escalation: [iam-everything]\n", "[app]"));
        assert!(
            unknown.iter().any(|p| p
                .message
                .contains("\"iam-everything\", which is not a catalogued method")),
            "{unknown:?}"
        );
        let p = Policy::load(
            &file_with(&s3, "    allow_escalation: [passrole-ec2]\n", "[app]"),
            "p.yaml",
        )
        .unwrap();
        assert!(
            p.warnings
                .iter()
                .any(|w| w.message.contains("names passrole-ec2, which it does not use")),
            "{:?}",
            p.warnings
        );
    }

    #[test]
    fn given_one_malformed_duration_when_loaded_then_one_error_says_it_could_not_parse() {
        let text =
            include_str!("../../../../infra/policies.yaml").replacen("max_duration: PT30M", "max_duration: PT30X", 1);
        let err = Policy::load(&text, "p.yaml").unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(
            err.problems[0].message.contains("\"PT30X\": not an ISO 8601 duration"),
            "{err}"
        );
    }

    #[test]
    fn given_a_set_using_the_probes_sid_when_loaded_then_it_is_refused() {
        let mine = "      - sid: latchpropagationprobe\n        actions: [s3:GetObject]\n        resources: [\"arn:aws:s3:::b/*\"]\n";
        let refused = problems(&file_with(mine, "", "[app]"));
        assert!(
            refused.iter().any(|p| p.message.contains("is Latch's own")),
            "{refused:?}"
        );
    }

    #[test]
    fn given_case_variant_or_look_alike_reserved_conditions_when_loaded_then_they_are_refused() {
        for (operator, key) in [
            ("DateLessThan", "AWS:CurrentTime"),
            ("ForAnyValue:DateGreaterThanIfExists", "aws:currenttime"),
            ("StringLike", "AWS:USERID"),
            // IAM operators are not ours to case-fold: a second `DateLessThan` block beside Latch's.
            ("dateLessThan", "s3:prefix"),
            ("DATELESSTHAN", "aws:SourceIp"),
            ("StringEquals", "aw\u{17f}:CurrentTime"),
            ("DateLessThan", "aws:Current\u{212a}ime"),
        ] {
            let statements = format!(
                "      - actions: [s3:GetObject]\n        resources: [\"arn:aws:s3:::b/*\"]\n        conditions:\n          \
                 {operator}:\n            \"{key}\": \"2030-01-01T00:00:00Z\"\n"
            );
            let p = problems(&file_with(&statements, "", "[app]"));
            assert!(!p.is_empty(), "{operator} {key} loaded");
            assert!(p.iter().all(|p| p.line.is_some()), "{p:?}");
        }
        let fine = "      - actions: [s3:GetObject]\n        resources: [\"arn:aws:s3:::b/*\"]\n        conditions:\n          \
                    ForAllValues:StringLikeIfExists: {\"aws:TagKeys\": [\"app-*\"]}\n          Null: {\"aws:RequestTag/équipe\": \"false\"}\n";
        assert!(Policy::load(&file_with(fine, "", "[app]"), "p.yaml").is_ok());
    }

    #[test]
    fn wildcard_intersection_follows_iam_semantics() {
        for (a, b, ci, want) in [
            ("iam:Create*", "iam:CreatePolicyVersion", true, true),
            ("iam:create*", "IAM:CreateAccessKey", true, true),
            ("iam:create*", "IAM:CreateAccessKey", false, false),
            ("*", "anything:at-all", false, true),
            ("a*c", "*b*", false, true),
            ("a?c", "abd", false, false),
            // As strings, a `*` may span colons: a region of `r:1:function:latch-x`.
            (
                "arn:aws:lambda:*:1:function:app-*-*",
                "arn:*:lambda:*:*:function:latch-*",
                false,
                true,
            ),
            ("", "*", false, true),
            ("", "?", false, false),
        ] {
            assert_eq!(wildcards_intersect(a, b, ci), want, "{a} ∩ {b}");
            assert_eq!(wildcards_intersect(b, a, ci), want, "{b} ∩ {a}");
        }
        // Against a real resource, whose region and account hold no colon, it cannot.
        let latch = "arn:*:lambda:*:*:function:latch-*";
        for (set_resource, want) in [
            ("arn:aws:lambda:*:1:function:app-*-*", false),
            ("arn:aws:lambda:*:1:function:app-*", false),
            ("arn:aws:lambda:*:1:function:*-*", true),
            ("arn:aws:lambda:*:1:function:lat*", true),
            ("arn:aws:lambda:*", true),
            ("*", true),
            ("arn:aws:s3:::latch-*", false),
        ] {
            assert_eq!(guardrails::could_be(set_resource, latch), want, "{set_resource}");
        }
    }

    /// An independent matcher: a literal against an IAM pattern, by recursion.
    fn matches(pattern: &[u8], text: &[u8]) -> bool {
        match (pattern.first(), text.first()) {
            (None, None) => true,
            (Some(b'*'), _) => matches(&pattern[1..], text) || (!text.is_empty() && matches(pattern, &text[1..])),
            (Some(b'?'), Some(_)) => matches(&pattern[1..], &text[1..]),
            (Some(p), Some(t)) if p == t => matches(&pattern[1..], &text[1..]),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn a_pattern_intersects_a_literal_exactly_when_it_matches_it(
            pattern in "[ab*?]{0,6}",
            literal in "[ab]{0,6}",
        ) {
            prop_assert_eq!(wildcards_intersect(&pattern, &literal, false), matches(pattern.as_bytes(), literal.as_bytes()));
        }

        /// For any set that loads without exceptions and any pipeline value its rule admits,
        /// the rendered document grants no catalogued action that is dangerous on any resource,
        /// and no resource that is one of Latch's own functions.
        #[test]
        fn no_rendering_of_an_accepted_set_grants_a_catalogued_action_or_latch_itself(
            actions in prop::collection::vec(prop::sample::select(vec![
                "s3:GetObject", "s3:*", "iam:PassRole", "iam:CreatePolicyVersion", "iam:Put*", "iam:Get*",
                "iam:*Policy", "lambda:UpdateFunctionCode", "lambda:*", "sts:AssumeRole", "*", "ec2:RunInstances",
                "iam:createaccesskey", "ssm:SendCommand", "lambda:CreateFunction",
            ]), 1..4),
            resources in prop::collection::vec(prop::sample::select(vec![
                "*", "arn:aws:iam::123456789012:role/*", "arn:aws:iam::123456789012:role/app",
                "arn:aws:lambda:${region}:${account}:function:${pipeline}-*",
                "arn:aws:lambda:${region}:${account}:function:${pipeline}",
                "arn:aws:lambda:us-east-1:123456789012:function:app-*", "arn:aws:s3:::b/${pipeline}/*",
            ]), 1..3),
            pipelines in prop::sample::select(vec!["[\"*\"]", "[latch]", "[\"app-*\"]", "[\"lat*\"]", "[app]"]),
            pipeline in prop::sample::select(vec!["latch", "latch-GrantFunction", "app", "app-web", "lat"]),
        ) {
            let listed = |items: &[&str]| items.iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", ");
            let text = file_with(&stmt(&format!("[{}]", listed(&actions)), &format!("[{}]", listed(&resources))), "", pipelines);
            let Ok(policy) = Policy::load(&text, "p.yaml") else { return Ok(()) };
            let rule = &policy.rules[0];
            prop_assume!(rule.pipelines.iter().any(|p| p.is_match(pipeline)));
            let set = policy.permission_sets.values().next().unwrap();
            let doc: Value = serde_json::from_str(set.render(&ctx(pipeline, "deploy"), expires()).unwrap().as_json()).unwrap();
            let always_dangerous = ["iam:createpolicyversion", "iam:putrolepolicy", "iam:attachrolepolicy", "iam:createaccesskey",
                "iam:updateassumerolepolicy", "iam:passrole", "sts:assumerole"];
            let latch_function = "arn:aws:lambda:us-east-1:123456789012:function:latch-GrantFunction-AB12";
            for st in doc["Statement"].as_array().unwrap() {
                let granted: Vec<String> = serde_json::from_value(st["Action"].clone()).unwrap();
                let resources: Vec<String> = serde_json::from_value(st["Resource"].clone()).unwrap();
                for a in &granted {
                    let a = a.to_lowercase();
                    for d in always_dangerous {
                        let on_any = resources.iter().any(|r| r == "*" || r.ends_with("role/*"));
                        prop_assert!(!(matches(a.as_bytes(), d.as_bytes()) && (on_any || !d.starts_with("sts") && d != "iam:passrole")),
                            "{} grants {} on {:?}", a, d, resources);
                    }
                    if matches(a.as_bytes(), b"lambda:updatefunctioncode") {
                        prop_assert!(!resources.iter().any(|r| matches(r.as_bytes(), latch_function.as_bytes())), "{:?}", resources);
                    }
                }
            }
        }
    }
}

mod native_checks_and_fair_share {
    use crate::policy::{FairShare, NativeTrigger, Policy};

    fn with(tail: &str) -> String {
        format!("{}\n{tail}", include_str!("../../../../events/policy-claimed.yaml"))
    }

    fn with_codebuild(codebuild: &str) -> String {
        include_str!("../../../../events/policy-claimed.yaml")
            .replace("codebuild: {project: \"app-*\"}", &format!("codebuild: {codebuild}"))
    }

    fn problems(text: &str) -> String {
        Policy::load(text, "p.yaml").unwrap_err().to_string()
    }

    #[test]
    fn given_no_fair_share_when_loaded_then_every_publisher_gets_the_default() {
        let p = Policy::load(&with(""), "p.yaml").unwrap();
        assert_eq!(p.fair_share, FairShare::default());
        assert_eq!(
            p.fair_share.limit_for("ci.github"),
            FairShare::DEFAULT_GRANTS_PER_MINUTE
        );
    }

    #[test]
    fn given_per_source_limits_when_loaded_then_they_replace_the_default_for_that_source() {
        let p = Policy::load(
            &with("fair_share:\n  grants_per_minute: 30\n  sources:\n    ci.gitlab: 5\n"),
            "p.yaml",
        )
        .unwrap();
        assert_eq!(p.fair_share.limit_for("ci.gitlab"), 5);
        assert_eq!(p.fair_share.limit_for("ci.github"), 30);
    }

    #[test]
    fn given_out_of_range_or_unknown_fair_share_settings_when_loaded_then_each_is_refused() {
        assert!(
            problems(&with("fair_share:\n  grants_per_minute: 0\n")).contains("grants_per_minute 0 is out of range")
        );
        assert!(problems(&with("fair_share:\n  sources:\n    ci.gitlab: 100001\n")).contains("ci.gitlab: 100001"));
        assert!(problems(&with("fair_share:\n  per_minute: 5\n")).contains("unknown field"));
        assert!(problems(&with("fair_share:\n  grants_per_minute: -1\n")).contains("fair_share"));
    }

    #[test]
    fn given_a_codebuild_rule_without_checks_when_loaded_then_it_pins_the_default_buildspec_and_the_role() {
        let p = Policy::load(&with(""), "p.yaml").unwrap();
        let rule = p
            .native
            .iter()
            .find(|r| r.name.as_str() == "codebuild-app-builds")
            .unwrap();
        let NativeTrigger::CodeBuild { checks, .. } = &rule.trigger else {
            panic!()
        };
        assert_eq!(checks.buildspec.as_deref(), Some("buildspec.yml"));
        assert!(checks.require_service_role);
        assert!(checks.initiators.is_none() && checks.source_versions.is_none());
    }

    #[test]
    fn given_bad_native_checks_when_loaded_then_each_is_refused_with_its_reason() {
        let cases = [
            (
                "{project: app-build, buildspec: ci.yml, allow_buildspec_override: true}",
                "contradict",
            ),
            (
                "{project: app-build, buildspec: /etc/passwd}",
                "is not a path in the source",
            ),
            (
                "{project: app-build, buildspec: ../x.yml}",
                "is not a path in the source",
            ),
            ("{project: app-build, initiators: []}", "allows nothing"),
            (
                "{project: app-build, source_versions: [\"[\"]}",
                "source version pattern",
            ),
            ("{project: app-build, webhook: true}", "unknown field"),
        ];
        for (codebuild, want) in cases {
            let text = with_codebuild(codebuild);
            let p = problems(&text);
            assert!(p.contains(want), "{codebuild}: {p}");
        }
        let text = include_str!("../../../../events/policy-claimed.yaml").replace(
            "codepipeline: {pipeline: \"app-*\", stage: Deploy, action: \"Deploy*\"}",
            "codepipeline: {pipeline: \"app-*\", stage: Deploy, action: \"Deploy*\", triggers: [GitPush]}",
        );
        assert!(problems(&text).contains("not CodePipeline trigger types"));
    }
}

mod placement {
    use super::*;

    #[test]
    fn given_a_rule_whose_name_begins_another_rules_name_when_it_is_wrong_then_its_own_line_is_given() {
        // A search for the text "name: deploy" stops at "name: deploy-prod" first.
        let text = MINIMAL.replace("  - name: r\n", "  - name: deploy-prod\n").replace(
            "    identity: claimed\n",
            "    identity: claimed\n  - name: deploy\n    sources: []\n    accounts: [\"123456789012\"]\n    \
             pipelines: [\"*\"]\n    roles: [\"arn:aws:iam::123456789012:role/latch/x\"]\n    permission_sets: [s]\n    \
             max_duration: 10m\n    identity: claimed\n",
        );
        let p = problems(&text);
        let no_sources = p
            .iter()
            .find(|p| p.message == "rule deploy lists no sources")
            .unwrap_or_else(|| panic!("{p:?}"));
        let line = no_sources.line.expect("placed");
        assert_eq!(text.lines().nth(line - 1), Some("  - name: deploy"), "{text}");
    }

    #[test]
    fn given_an_action_in_a_later_statement_when_it_breaks_a_guardrail_then_that_statements_line_is_given() {
        // The same action, allowed in the first statement and refused in the second: each
        // problem is placed at the item the parser read, not the first line with the same text.
        let text = MINIMAL.replace(
            "        resources: [\"arn:aws:s3:::b/${pipeline}/*\"]\n",
            "        resources: [\"arn:aws:s3:::b/${pipeline}/*\"]\n      - actions: [s3:GetObject, \"*\"]\n        \
             resources: [\"*\"]\n",
        );
        let p = problems(&text);
        let wildcard = p
            .iter()
            .find(|p| p.message.contains("breaks guardrail wildcard_action"))
            .unwrap_or_else(|| panic!("{p:?}"));
        assert_eq!(wildcard.line, Some(9), "{text}");
    }

    #[test]
    fn given_a_key_written_twice_when_loaded_then_the_file_is_refused_at_the_second() {
        let text = MINIMAL.replace(
            "    max_duration: 10m\n    statements",
            "    max_duration: 10m\n    max_duration: 12h\n    statements",
        );
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].line, Some(6));
        let twice_set = MINIMAL.replace(
            "rules:\n",
            "  s:\n    description: again\n    max_duration: 1h\n    statements: []\nrules:\n",
        );
        assert_eq!(problems(&twice_set).len(), 1);
    }

    #[test]
    fn given_yaml_1_1_booleans_or_merge_keys_when_loaded_then_they_are_refused() {
        let yes = MINIMAL.replace(
            "    identity: claimed\n",
            "    identity: claimed\n    bind_session: yes\n",
        );
        assert!(
            problems(&yes).iter().any(|p| p.line == Some(18)),
            "{:?}",
            problems(&yes)
        );
        let merge = MINIMAL
            .replace("  s:\n", "  s: &base\n")
            .replace("rules:\n", "  t:\n    <<: *base\n    description: merged\nrules:\n");
        assert!(!problems(&merge).is_empty());
    }
}
