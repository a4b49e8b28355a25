//! The permissions boundary, enforced by IAM (strict-AWS mode): the grant role may put a policy
//! only on a role that carries the deployment's boundary, checked by IAM on every call, whatever
//! Latch resolved or cached. Requests signed with [`GRANT_KEY`] are the grant role's; the
//! proxy evaluates its `iam:PermissionsBoundary` condition as template.yaml writes it.

use grant::Outcome;
use latch_core::grant::DenyReason;
use latch_core::grant::StartOutcome;
use latch_tests::faults::{FaultPlan, FaultProxy};
use latch_tests::strict::{StrictAws, StrictKind};
use latch_tests::{Harness, s, unique};
use serde_json::json;

const GRANT_KEY: &str = "AKIALATCHGRANTROLE01";
const BOUNDARY_DOC: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;

fn boundary_arn(name: &str) -> String {
    format!("arn:aws:iam::123456789012:policy/{name}")
}

/// A strict proxy whose grant-role requests carry the template's boundary condition.
/// With `tag`: the template's RequireElevatableTag = "true" (the role must carry
/// latch:elevatable = true as well).
async fn proxy_with(boundary: &str, tag: bool) -> FaultProxy {
    let strict = StrictAws::verdicts_only().boundary_condition(GRANT_KEY, boundary);
    let strict = if tag {
        strict.tag_condition(GRANT_KEY, "latch:elevatable", "true")
    } else {
        strict
    };
    FaultProxy::in_front_of_shared_emulator(FaultPlan::new(16).strict(strict)).await
}

/// One claimed rule over one exact role (the harness creates it, renamed with its id).
fn policy(role: &str) -> String {
    format!(
        r#"version: 1
elevatable_path: /latch/
permission_sets:
  deploy-artifacts:
    description: d
    max_duration: 30m
    statements:
      - actions: [s3:PutObject]
        resources: ["arn:aws:s3:::latch-artifacts-${{account}}/${{pipeline}}/*"]
rules:
  - name: r
    identity: claimed
    sources: [ci.github]
    accounts: ["123456789012"]
    pipelines: ["*"]
    roles: ["{role}"]
    permission_sets: [deploy-artifacts]
    max_duration: 30m
    max_active_grants_per_role: 10
"#
    )
}

struct Setup {
    proxy: FaultProxy,
    h: Harness,
    role_arn: String,
    role_name: String,
    boundary: String,
}

/// A harness signing as the grant role through the strict proxy, its rule's role created by
/// the harness, and the deployment's boundary policy created in IAM.
async fn setup() -> Setup {
    setup_with(false).await
}

async fn setup_with(tag: bool) -> Setup {
    let name = unique("bnd");
    let boundary = boundary_arn(&format!("{name}-boundary"));
    let proxy = proxy_with(&boundary, tag).await;
    let role_in_policy = format!("arn:aws:iam::123456789012:role/latch/{name}");
    let sdk = latch_tests::strict::sdk_config(&proxy.url(), GRANT_KEY).await;
    let h = Harness::with_sdk(sdk, &policy(&role_in_policy)).await;
    h.iam
        .create_policy()
        .policy_name(format!("{name}-boundary"))
        .policy_document(BOUNDARY_DOC)
        .send()
        .await
        .expect("CreatePolicy");
    let role_name = format!("{}-{name}", h.id);
    Setup {
        role_arn: format!("arn:aws:iam::123456789012:role/latch/{role_name}"),
        proxy,
        h,
        role_name,
        boundary,
    }
}

fn start(
    h: &Harness,
    role: &str,
    run: &str,
) -> lambda_runtime::LambdaEvent<aws_lambda_events::eventbridge::EventBridgeEvent<serde_json::Value>> {
    h.event(
        "pipeline-job-started.json",
        json!({"role_arn": role, "run_id": run, "environment": null, "ref": null}),
    )
}

#[tokio::test]
async fn a_boundary_removed_after_latch_resolved_the_role_is_refused_by_iam_and_nothing_is_attached() {
    // GIVEN a role carrying the deployment's boundary, and a grant function that checks it
    let Setup {
        proxy,
        h,
        role_arn,
        role_name,
        boundary,
    } = setup().await;
    h.iam
        .put_role_permissions_boundary()
        .role_name(&role_name)
        .permissions_boundary(&boundary)
        .send()
        .await
        .expect("PutRolePermissionsBoundary");
    let mut service = h.grant_service();
    service.ports.iam = service.ports.iam.clone().requiring_boundary(Some(boundary.clone()));
    let first = grant::handle(&service, start(&h, &role_arn, "1")).await.unwrap();
    assert!(matches!(first, Outcome::Start(StartOutcome::Activated(_))), "{first:?}");
    // WHEN someone removes the boundary, and a second job starts while Latch's resolution of
    // the role (boundary present) is still cached
    h.iam
        .delete_role_permissions_boundary()
        .role_name(&role_name)
        .send()
        .await
        .expect("DeleteRolePermissionsBoundary");
    let second = grant::handle(&service, start(&h, &role_arn, "2")).await.unwrap();
    // THEN IAM refuses the put: the grant ends failed/iam_rejected and nothing new is attached
    assert_eq!(second, Outcome::Start(StartOutcome::Denied(DenyReason::IamRejected)));
    assert_eq!(
        proxy
            .report()
            .strict_count("iam.PutRolePolicy", StrictKind::AccessDenied),
        1
    );
    let names = h.role_policy_names(&role_arn).await;
    assert_eq!(names.len(), 1, "only the first grant's policy: {names:?}");
    let grants = h.items("grant").await;
    let failed = grants
        .iter()
        .filter(|g| s(g, "status").as_deref() == Some("failed"))
        .count();
    assert_eq!(failed, 1, "{grants:?}");
    let denied = h.items("audit").await;
    assert!(
        denied.iter().any(|a| s(a, "reason").as_deref() == Some("iam_rejected")),
        "{denied:?}"
    );
}

#[tokio::test]
async fn iam_refuses_a_role_without_the_boundary_even_when_the_function_does_not_check_it() {
    // GIVEN a role without any boundary, and a grant function that does not check boundaries
    // (LATCH_BOUNDARY_ARN unset): only IAM stands in the way
    let Setup { proxy, h, role_arn, .. } = setup().await;
    let service = h.grant_service();
    // WHEN a job starts
    let outcome = grant::handle(&service, start(&h, &role_arn, "1")).await.unwrap();
    // THEN nothing is attached
    assert_eq!(outcome, Outcome::Start(StartOutcome::Denied(DenyReason::IamRejected)));
    assert!(h.role_policy_names(&role_arn).await.is_empty());
    assert_eq!(
        proxy
            .report()
            .strict_count("iam.PutRolePolicy", StrictKind::AccessDenied),
        1
    );
}

#[tokio::test]
async fn another_boundary_is_not_the_deployments_and_revocation_needs_none() {
    // GIVEN a role whose boundary is some other policy, holding a grant Latch attached while it
    // carried the deployment's
    let Setup {
        proxy,
        h,
        role_arn,
        role_name,
        boundary,
    } = setup().await;
    h.iam
        .put_role_permissions_boundary()
        .role_name(&role_name)
        .permissions_boundary(&boundary)
        .send()
        .await
        .expect("PutRolePermissionsBoundary");
    let service = h.grant_service();
    let first = grant::handle(&service, start(&h, &role_arn, "1")).await.unwrap();
    assert!(matches!(first, Outcome::Start(StartOutcome::Activated(_))), "{first:?}");
    let other = format!("{}-other", role_name);
    h.iam
        .create_policy()
        .policy_name(&other)
        .policy_document(BOUNDARY_DOC)
        .send()
        .await
        .expect("CreatePolicy");
    h.iam
        .put_role_permissions_boundary()
        .role_name(&role_name)
        .permissions_boundary(boundary_arn(&other))
        .send()
        .await
        .expect("PutRolePermissionsBoundary");
    // WHEN another job starts, and the first one finishes
    let second = grant::handle(&service, start(&h, &role_arn, "2")).await.unwrap();
    let finish = h.event(
        "pipeline-job-finished.json",
        json!({"run_id": "1", "environment": null, "ref": null}),
    );
    grant::handle(&service, finish).await.unwrap();
    // THEN the put is refused, and the finished grant's policy is still removed
    assert_eq!(second, Outcome::Start(StartOutcome::Denied(DenyReason::IamRejected)));
    assert_eq!(
        proxy
            .report()
            .strict_count("iam.PutRolePolicy", StrictKind::AccessDenied),
        1
    );
    assert!(h.role_policy_names(&role_arn).await.is_empty());
}

#[tokio::test]
async fn with_the_tag_required_a_role_carrying_the_boundary_but_not_the_tag_is_refused() {
    // GIVEN RequireElevatableTag: a role with the deployment's boundary and no latch:elevatable tag
    let Setup {
        proxy,
        h,
        role_arn,
        role_name,
        boundary,
    } = setup_with(true).await;
    h.iam
        .put_role_permissions_boundary()
        .role_name(&role_name)
        .permissions_boundary(&boundary)
        .send()
        .await
        .expect("PutRolePermissionsBoundary");
    let service = h.grant_service();
    // WHEN a job starts, THEN IAM refuses
    let untagged = grant::handle(&service, start(&h, &role_arn, "1")).await.unwrap();
    assert_eq!(untagged, Outcome::Start(StartOutcome::Denied(DenyReason::IamRejected)));
    assert!(h.role_policy_names(&role_arn).await.is_empty());
    // AND once the platform team tags it, a new job is elevated
    h.iam
        .tag_role()
        .role_name(&role_name)
        .tags(
            aws_sdk_iam::types::Tag::builder()
                .key("latch:elevatable")
                .value("true")
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("TagRole");
    let tagged = grant::handle(&service, start(&h, &role_arn, "2")).await.unwrap();
    assert!(
        matches!(tagged, Outcome::Start(StartOutcome::Activated(_))),
        "{tagged:?}"
    );
    assert_eq!(
        proxy
            .report()
            .strict_count("iam.PutRolePolicy", StrictKind::AccessDenied),
        1
    );
}
