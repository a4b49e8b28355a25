//! Revocation on every path, over the in-memory ports: finish, TTL, sweep, drift repair, and
//! the races between them.

use chrono::Duration;
use serde_json::{Value, json};

use super::*;
use crate::audit::Decision;
use crate::grant::{DenyReason, FinishOutcome, StartOutcome};
use crate::memory::Faults;
use crate::model::Deployment;
use crate::ports::IamError;
use crate::sweep::SweepSettings;
use crate::test_fixtures::{
    MemoryService as Service, MemorySweeper, deployer as role, envelope, memory_service, memory_sweeper, t0,
};

fn service() -> Service {
    memory_service(t0(), &Faults::default())
}

fn start_detail(run: &str, duration: &str) -> Value {
    json!({"pipeline": "app-release", "run_id": run, "job": "deploy", "attempt": 1,
           "role_arn": "arn:aws:iam::123456789012:role/latch/app-deployer",
           "permission_set": "deploy-artifacts", "duration": duration, "ref": "refs/heads/main"})
}

fn finish_detail(run: &str) -> Value {
    json!({"pipeline": "app-release", "run_id": run, "job": "deploy", "attempt": 1, "outcome": "failure"})
}

async fn start(s: &Service, run: &str, duration: &str) -> StartOutcome {
    s.on_start(
        &envelope("Pipeline Job Started", &format!("s-{run}")),
        &start_detail(run, duration),
        200,
    )
    .await
    .unwrap()
}

async fn finish(s: &Service, run: &str) -> FinishOutcome {
    s.on_finish(
        &envelope("Pipeline Job Finished", &format!("f-{run}")),
        &finish_detail(run),
        100,
    )
    .await
    .unwrap()
}

fn revoked_audits(s: &Service) -> Vec<crate::audit::AuditRecord> {
    s.ports
        .store
        .audits()
        .into_iter()
        .filter(|a| a.decision == Decision::Revoked)
        .collect()
}

fn sweeper(s: &Service) -> MemorySweeper<'_> {
    memory_sweeper(
        s,
        SweepSettings {
            page_size: 2,
            concurrency: 3,
            drift_grace: Duration::minutes(10),
            deployment: Default::default(),
            drift_iam_per_second: 1_000.0,
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn given_an_active_grant_when_its_job_finishes_then_it_is_revoked_at_once() {
    let s = service();
    let StartOutcome::Activated(id) = start(&s, "1", "15m").await else {
        panic!()
    };
    assert_eq!(
        finish(&s, "1").await,
        FinishOutcome::Finished {
            revoked: 1,
            already_ended: 0,
            failed: 0
        }
    );
    assert_eq!(s.ports.iam.policy(&role(), &id.policy_name()), None);
    let revoked = revoked_audits(&s);
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0].reason, "job_finished");
    assert!(revoked[0].revoked_at.is_some());
    assert_eq!(s.ports.store.active_on(&role()), 0);
    let published: Vec<_> = s.ports.audit.published().into_iter().map(|a| a.decision).collect();
    assert_eq!(published, [Decision::Activated, Decision::Revoked]);
    // The finish delivered again: nothing more.
    assert_eq!(
        finish(&s, "1").await,
        FinishOutcome::Finished {
            revoked: 0,
            already_ended: 1,
            failed: 0
        }
    );
    assert_eq!(revoked_audits(&s).len(), 1);
}

#[tokio::test]
async fn given_a_finish_before_its_start_when_the_start_arrives_then_it_is_refused() {
    let s = service();
    assert_eq!(
        finish(&s, "2").await,
        FinishOutcome::Finished {
            revoked: 0,
            already_ended: 0,
            failed: 0
        }
    );
    assert_eq!(
        start(&s, "2", "15m").await,
        StartOutcome::Denied(DenyReason::JobFinished)
    );
    assert_eq!(s.ports.iam.policy_count(), 0);
    // Another run of the same pipeline is not affected.
    assert!(matches!(start(&s, "3", "15m").await, StartOutcome::Activated(_)));
}

#[tokio::test]
async fn given_a_revoked_grant_when_its_start_is_replayed_then_nothing_is_granted_again() {
    let s = service();
    let StartOutcome::Activated(id) = start(&s, "4", "15m").await else {
        panic!()
    };
    finish(&s, "4").await;
    let puts = s.ports.iam.calls().0;
    assert_eq!(start(&s, "4", "15m").await, StartOutcome::AlreadyEnded(id));
    assert_eq!((s.ports.iam.policy_count(), s.ports.iam.calls().0), (0, puts));
}

#[tokio::test]
async fn given_expired_and_live_grants_when_the_sweep_runs_then_only_expired_ones_go() {
    let s = service();
    for run in ["a", "b", "c"] {
        start(&s, run, "5m").await;
    }
    let StartOutcome::Activated(live) = start(&s, "d", "20m").await else {
        panic!()
    };
    s.ports.clock.advance(Duration::minutes(6));
    let report = sweeper(&s).run(None).await.unwrap();
    assert_eq!(
        (report.revoked, report.already_revoked, report.revoke_failed),
        (3, 0, 0)
    );
    assert_eq!(s.ports.iam.policy_count(), 1);
    assert!(s.ports.iam.policy(&role(), &live.policy_name()).is_some());
    assert!(revoked_audits(&s).iter().all(|a| a.reason == "expired_sweep"));
    assert_eq!(s.ports.store.active_on(&role()), 1);
    // A second run finds nothing left to do.
    let again = sweeper(&s).run(None).await.unwrap();
    assert_eq!((again.revoked, again.already_revoked), (0, 0));
}

#[tokio::test]
async fn given_the_bus_failing_when_the_sweep_revokes_then_the_revoke_stands_and_no_failure_is_audited() {
    let s = service();
    start(&s, "e", "5m").await;
    s.ports.clock.advance(Duration::minutes(6));
    s.ports.audit.fail_next(SinkError::Transient("throttled".into()));
    let report = sweeper(&s).run(None).await.unwrap();
    assert_eq!(
        (report.revoked, report.revoke_failed, report.events_unpublished),
        (1, 0, 1)
    );
    assert_eq!(s.ports.iam.policy_count(), 0);
    assert_eq!(revoked_audits(&s).len(), 1, "the durable Revoked audit stands");
    assert!(
        s.ports
            .store
            .audits()
            .iter()
            .all(|a| a.decision != Decision::RevokeFailed),
        "a revoke that succeeded is not audited as failed"
    );
}

#[tokio::test]
async fn given_the_sweep_revoke_applied_but_its_answer_lost_then_the_event_is_still_published() {
    let s = service();
    start(&s, "l", "5m").await;
    s.ports.clock.advance(Duration::minutes(6));
    s.ports.store.lose_next_revocation_answer();
    let report = sweeper(&s).run(None).await.unwrap();
    assert_eq!((report.revoked, report.revoke_failed), (1, 0));
    let recorded = revoked_audits(&s);
    assert_eq!(recorded.len(), 1);
    assert!(
        s.ports.audit.published().contains(&recorded[0]),
        "no later sweep would see this grant: this run must publish its event"
    );
    assert!(
        s.ports
            .store
            .audits()
            .iter()
            .all(|a| a.decision != Decision::RevokeFailed)
    );
}

#[tokio::test]
async fn given_the_stream_and_the_sweep_racing_on_one_grant_then_one_revoked_audit_and_its_event() {
    let s = service();
    start(&s, "r", "5m").await;
    let grant = s.ports.store.grants().remove(0);
    s.ports.clock.advance(Duration::minutes(6));
    // TTL deleted the item and the stream handler revokes from the old image...
    let revoker = s.revoker();
    let ttl = revoker.revoke(&grant, RevokeReason::ExpiredTtl, RecordState::DeletedByTtl);
    // ...while the sweep, which read the index before the deletion, revokes the same grant.
    let sweep = revoker.revoke(&grant, RevokeReason::ExpiredSweep, RecordState::Present);
    let (a, b) = tokio::join!(ttl, sweep);
    let outcomes = [a.unwrap(), b.unwrap()];
    assert!(
        outcomes.contains(&RevokeOutcome::Revoked) && outcomes.contains(&RevokeOutcome::AlreadyRevoked),
        "{outcomes:?}"
    );
    let recorded = revoked_audits(&s);
    assert_eq!(recorded.len(), 1, "one durable Revoked audit");
    // Each path publishes what is recorded (the loser may run before the winner's event), so
    // the event goes out at least once and every copy is the recorded one, under its id.
    let published: Vec<_> = s
        .ports
        .audit
        .published()
        .into_iter()
        .filter(|a| a.decision == Decision::Revoked)
        .collect();
    assert!(!published.is_empty());
    assert!(published.iter().all(|p| *p == recorded[0]), "{published:#?}");
    assert_eq!(s.ports.store.active_on(&role()), 0);
}

#[tokio::test]
async fn given_a_policy_already_gone_when_revoking_then_it_is_success() {
    let s = service();
    let StartOutcome::Activated(id) = start(&s, "g", "5m").await else {
        panic!()
    };
    s.ports
        .iam
        .delete_role_policy(&role(), &id.policy_name())
        .await
        .unwrap();
    assert_eq!(
        finish(&s, "g").await,
        FinishOutcome::Finished {
            revoked: 1,
            already_ended: 0,
            failed: 0
        }
    );
}

#[tokio::test]
async fn given_iam_failing_when_the_sweep_revokes_then_it_audits_the_failure_and_retries_next_run() {
    let s = service();
    start(&s, "f", "5m").await;
    s.ports.clock.advance(Duration::minutes(6));
    s.ports.iam.fail_next(IamError::Transient("throttled".into()));
    let report = sweeper(&s).run(None).await.unwrap();
    assert_eq!((report.revoked, report.revoke_failed), (0, 1));
    let failed: Vec<_> = s
        .ports
        .store
        .audits()
        .into_iter()
        .filter(|a| a.decision == Decision::RevokeFailed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].detail.as_deref().unwrap().contains("throttled"));
    assert_eq!(s.ports.iam.policy_count(), 1, "still there, and still self-expiring");
    s.ports.clock.advance(Duration::minutes(1));
    let next = sweeper(&s).run(None).await.unwrap();
    assert_eq!((next.revoked, next.revoke_failed), (1, 0));
    assert_eq!(s.ports.iam.policy_count(), 0);
}

#[tokio::test]
async fn given_an_orphan_policy_when_drift_repair_runs_then_it_waits_out_the_grace_and_removes_it() {
    let s = service();
    s.ports.iam.add_role(&role());
    let StartOutcome::Activated(live) = start(&s, "l", "20m").await else {
        panic!()
    };
    s.ports
        .iam
        .plant(&role(), "latch-0123456789abcdef0123456789abcdef", "{}");
    s.ports.iam.plant(&role(), "not-latch", "{}");
    let first = sweeper(&s).run(None).await.unwrap();
    assert_eq!((first.drift_repaired, first.drift_pending), (0, 1));
    s.ports.clock.advance(Duration::minutes(11));
    let second = sweeper(&s).run(None).await.unwrap();
    assert_eq!(second.drift_repaired, 1);
    assert!(
        s.ports
            .iam
            .policy(&role(), "latch-0123456789abcdef0123456789abcdef")
            .is_none()
    );
    assert!(
        s.ports.iam.policy(&role(), "not-latch").is_some(),
        "only Latch's policies are Latch's business"
    );
    assert!(
        s.ports.iam.policy(&role(), &live.policy_name()).is_some(),
        "live grants are kept"
    );
    let repaired: Vec<_> = s
        .ports
        .store
        .audits()
        .into_iter()
        .filter(|a| a.decision == Decision::DriftRepaired)
        .collect();
    assert_eq!(repaired.len(), 1);
    assert_eq!(
        repaired[0].policy_name.as_deref(),
        Some("latch-0123456789abcdef0123456789abcdef")
    );
}

#[tokio::test]
async fn given_two_deployments_on_one_role_when_each_repairs_drift_then_neither_touches_the_other() {
    // Deployment "blue" grants; deployment "green" (another stack or region, its own table)
    // sees blue's policy on the shared role with no grant in its own table.
    let blue = service().with_deployment(Deployment::parse("blue").unwrap());
    blue.ports.iam.add_role(&role());
    let StartOutcome::Activated(id) = start(&blue, "b", "20m").await else {
        panic!()
    };
    let blue_name = Deployment::parse("blue").unwrap().policy_name(&id);
    assert!(
        blue.ports.iam.policy(&role(), &blue_name).is_some(),
        "named for its deployment"
    );
    blue.ports.iam.plant(&role(), "latch-guardrails", "{}");
    blue.ports
        .iam
        .plant(&role(), "latch-0123456789abcdef0123456789abcdef", "{}");
    let mut green = service().with_deployment(Deployment::parse("green").unwrap());
    green.ports.iam = blue.ports.iam.clone();
    green.ports.clock.advance(Duration::hours(1));
    let settings = |d: &str| SweepSettings {
        page_size: 2,
        concurrency: 3,
        drift_grace: Duration::minutes(10),
        deployment: Deployment::parse(d).unwrap(),
        drift_iam_per_second: 1_000.0,
        ..Default::default()
    };
    for _ in 0..2 {
        memory_sweeper(&green, settings("green")).run(None).await.unwrap();
    }
    assert!(
        green.ports.iam.policy(&role(), &blue_name).is_some(),
        "blue's grant is not green's orphan"
    );
    assert!(
        green.ports.iam.policy(&role(), "latch-guardrails").is_some(),
        "a team's own policy"
    );
    assert!(
        green
            .ports
            .iam
            .policy(&role(), "latch-0123456789abcdef0123456789abcdef")
            .is_some()
    );
    let repaired = memory_sweeper(&blue, settings("blue")).run(None).await.unwrap();
    assert_eq!(repaired.drift_repaired, 0, "blue's own grant is live");
}

#[tokio::test]
async fn given_a_late_attach_of_an_ended_grant_when_drift_repair_runs_then_it_comes_off_without_grace() {
    let s = service();
    s.ports.iam.add_role(&role());
    let StartOutcome::Activated(id) = start(&s, "late", "20m").await else {
        panic!()
    };
    finish(&s, "late").await;
    // An attach that was in flight lands after the finish's delete.
    s.ports.iam.plant(&role(), &id.policy_name(), "{}");
    let report = sweeper(&s).run(None).await.unwrap();
    assert_eq!((report.drift_repaired, report.drift_pending), (1, 0));
    assert!(s.ports.iam.policy(&role(), &id.policy_name()).is_none());
}

#[tokio::test]
async fn given_a_deadline_already_past_when_the_sweep_runs_then_it_stops_cleanly() {
    let s = service();
    start(&s, "x", "5m").await;
    s.ports.clock.advance(Duration::minutes(6));
    let report = sweeper(&s).run(Some(std::time::Instant::now())).await.unwrap();
    assert!(report.stopped_early);
    assert_eq!(report.revoked, 0);
    assert_eq!(sweeper(&s).run(None).await.unwrap().revoked, 1);
}

/// IAM that notes, per role, how many writes were in flight at once (each takes a moment).
struct OverlapIam<'a> {
    inner: &'a crate::memory::MemoryIam,
    state: std::sync::Mutex<Overlap>,
}

#[derive(Default)]
struct Overlap {
    per_role: std::collections::HashMap<String, usize>,
    total: usize,
    max_per_role: usize,
    max_total: usize,
}

impl<'a> OverlapIam<'a> {
    fn new(inner: &'a crate::memory::MemoryIam) -> Self {
        Self {
            inner,
            state: Default::default(),
        }
    }

    fn enter(&self, role: &crate::model::RoleArn) {
        let mut s = self.state.lock().unwrap();
        let n = s.per_role.entry(role.as_str().to_ascii_lowercase()).or_default();
        *n += 1;
        let n = *n;
        s.total += 1;
        s.max_per_role = s.max_per_role.max(n);
        s.max_total = s.max_total.max(s.total);
    }

    fn leave(&self, role: &crate::model::RoleArn) {
        let mut s = self.state.lock().unwrap();
        *s.per_role.get_mut(&role.as_str().to_ascii_lowercase()).unwrap() -= 1;
        s.total -= 1;
    }
}

impl crate::ports::IamWriter for OverlapIam<'_> {
    async fn resolve_role(&self, role: &crate::model::RoleArn) -> Result<crate::ports::ResolvedRole, IamError> {
        self.inner.resolve_role(role).await
    }

    async fn put_role_policy(
        &self,
        role: &crate::model::RoleArn,
        name: &str,
        document: &crate::policy::PolicyDocument,
    ) -> Result<(), IamError> {
        self.inner.put_role_policy(role, name, document).await
    }

    async fn delete_role_policy(
        &self,
        role: &crate::model::RoleArn,
        name: &str,
    ) -> Result<crate::ports::Deletion, IamError> {
        self.enter(role);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let out = self.inner.delete_role_policy(role, name).await;
        self.leave(role);
        out
    }
}

#[tokio::test]
async fn given_expired_grants_on_few_roles_when_the_sweep_runs_then_one_role_at_a_time_roles_in_parallel() {
    let s = service();
    // Four grants on app-deployer, one on each of four ci-* roles (another rule, another source).
    for run in ["a", "b", "c", "d"] {
        start(&s, run, "5m").await;
    }
    for n in 1..=4 {
        let mut env = envelope("Pipeline Job Started", &format!("g-{n}"));
        env.source = "ci.gitlab".into();
        let detail = json!({"pipeline": "platform-x", "run_id": format!("g{n}"), "job": "deploy", "attempt": 1,
               "role_arn": format!("arn:aws:iam::123456789012:role/latch/ci-{n}"),
               "permission_set": "deploy-artifacts", "duration": "5m"});
        let outcome = s.on_start(&env, &detail, 200).await.unwrap();
        assert!(matches!(outcome, StartOutcome::Activated(_)), "{outcome:?}");
    }
    s.ports.clock.advance(Duration::minutes(6));
    let iam = OverlapIam::new(&s.ports.iam);
    let overlapping = Ports::new(iam, s.ports.store.clone(), s.ports.audit.clone(), s.ports.clock.clone());
    let settings = SweepSettings {
        page_size: 100,
        concurrency: 4,
        drift_grace: Duration::minutes(10),
        deployment: Default::default(),
        drift_iam_per_second: 1_000.0,
        ..Default::default()
    };
    let sweep = overlapping.sweeper(&s.policy, &s.ports.iam, settings);
    let report = sweep.run(None).await.unwrap();
    assert_eq!((report.revoked, report.revoke_failed), (8, 0));
    let o = overlapping.iam.state.lock().unwrap();
    assert_eq!(o.max_per_role, 1, "one role's revokes never overlap");
    assert!(
        (2..=4).contains(&o.max_total),
        "roles in parallel, within the bound: {}",
        o.max_total
    );
    assert_eq!(s.ports.iam.policy_count(), 0);
}
