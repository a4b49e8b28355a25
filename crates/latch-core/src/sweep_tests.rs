//! The sweep keeping up: leases, the deadline before each revoke, drift repair's cursor and
//! pace, one Revoke Failed audit per episode. Over the in-memory ports.

use std::time::{Duration as StdDuration, Instant};

use chrono::Duration;

use super::*;
use crate::audit::Decision;
use crate::event::DETAIL_TYPE_STARTED;
use crate::grant::{GrantService, StartOutcome};
use crate::memory::{Faults, FixedClock, MemoryAuditSink, MemoryIam, MemoryStore};
use crate::model::RoleArn;
use crate::policy::Policy;
use crate::ports::{IamError, Ports};
use crate::test_fixtures::{MemoryService as Service, envelope, memory_service, memory_sweeper, t0};

fn service() -> Service {
    memory_service(t0(), &Faults::default())
}

async fn start(s: &Service, run: &str, role: &str) -> StartOutcome {
    let detail = serde_json::json!({
        "pipeline": "app-release", "run_id": run, "job": "deploy", "attempt": 1,
        "role_arn": role, "permission_set": "deploy-artifacts", "duration": "5m", "ref": "refs/heads/main",
    });
    let outcome = s
        .on_start(&envelope(DETAIL_TYPE_STARTED, &format!("s-{run}")), &detail, 200)
        .await
        .unwrap();
    assert!(matches!(outcome, StartOutcome::Activated(_)), "{outcome:?}");
    outcome
}

fn fast(settings: SweepSettings) -> SweepSettings {
    SweepSettings {
        drift_iam_per_second: 10_000.0,
        ..settings
    }
}

const DEPLOYER: &str = "arn:aws:iam::123456789012:role/latch/app-deployer";

#[tokio::test]
async fn given_a_run_holding_the_lease_when_another_run_starts_then_it_does_nothing() {
    let s = service();
    start(&s, "a", DEPLOYER).await;
    s.ports.clock.advance(Duration::minutes(6));
    let now = s.ports.clock.now();
    assert!(
        s.ports
            .store
            .take_lease(SweepTask::Expired, "other-run", now, now + Duration::seconds(55))
            .await
            .unwrap()
    );

    let report = memory_sweeper(&s, fast(SweepSettings::default()))
        .run_task(SweepTask::Expired, None, None)
        .await
        .unwrap();

    assert_eq!(report.lease_held_elsewhere, vec![SweepTask::Expired]);
    assert_eq!((report.revoked, report.expired_found), (0, 0));
    assert_eq!(s.ports.iam.policy_count(), 1, "the other run's work, not this one's");
}

#[tokio::test]
async fn given_a_lease_left_by_a_dead_run_when_it_expires_then_the_next_run_takes_over() {
    let s = service();
    start(&s, "a", DEPLOYER).await;
    s.ports.clock.advance(Duration::minutes(6));
    let now = s.ports.clock.now();
    s.ports
        .store
        .take_lease(SweepTask::Expired, "dead-run", now, now + Duration::seconds(55))
        .await
        .unwrap();
    s.ports.clock.advance(Duration::seconds(56));

    let report = memory_sweeper(&s, fast(SweepSettings::default()))
        .run_task(SweepTask::Expired, None, None)
        .await
        .unwrap();

    assert_eq!(report.revoked, 1);
    assert!(report.lease_held_elsewhere.is_empty());
}

#[tokio::test]
async fn given_a_finished_run_when_the_next_starts_then_the_lease_was_given_back() {
    let s = service();
    let sweeper = memory_sweeper(&s, fast(SweepSettings::default()));
    sweeper.run_task(SweepTask::Expired, None, None).await.unwrap();
    let again = sweeper.run_task(SweepTask::Expired, None, None).await.unwrap();
    assert!(again.lease_held_elsewhere.is_empty(), "released, not left to expire");
}

#[tokio::test]
async fn given_the_expired_and_drift_leases_when_both_tasks_run_then_they_do_not_block_each_other() {
    let s = service();
    let now = s.ports.clock.now();
    s.ports
        .store
        .take_lease(SweepTask::Expired, "other-run", now, now + Duration::seconds(55))
        .await
        .unwrap();
    let report = memory_sweeper(&s, fast(SweepSettings::default()))
        .run_task(SweepTask::Drift, None, None)
        .await
        .unwrap();
    assert!(report.lease_held_elsewhere.is_empty());
}

/// IAM that takes `delay` per call: the deadline must be checked before each revoke, not per page.
#[tokio::test]
async fn given_slow_iam_when_the_deadline_comes_mid_page_then_no_revoke_starts_after_it() {
    let s = service();
    for i in 0..6 {
        start(&s, &format!("r{i}"), DEPLOYER).await;
    }
    s.ports.clock.advance(Duration::minutes(6));
    s.ports.iam.set_delay(StdDuration::from_millis(40));
    let stop_by = Instant::now() + StdDuration::from_millis(100);

    let report = memory_sweeper(&s, fast(SweepSettings::default()))
        .run_task(SweepTask::Expired, Some(stop_by), None)
        .await
        .unwrap();

    assert!(report.stopped_early);
    assert_eq!(report.expired_found, 6, "one page: the old code revoked all six");
    assert!(
        report.revoked < 6 && report.revoked + report.not_reached == 6,
        "{report:?}"
    );
    assert_eq!(report.backlog(), report.not_reached);
    assert_eq!(
        s.ports.iam.policy_count(),
        report.not_reached,
        "left for the next run, still self-expiring"
    );
}

#[tokio::test]
async fn given_an_expired_grant_when_the_sweep_runs_then_it_reports_how_late_it_is() {
    let s = service();
    start(&s, "a", DEPLOYER).await;
    s.ports.clock.advance(Duration::minutes(7));
    let report = memory_sweeper(&s, fast(SweepSettings::default()))
        .run(None)
        .await
        .unwrap();
    assert_eq!(report.oldest_expired_secs, Some(120));
}

fn many_roles_policy(n: usize) -> Policy {
    let roles: Vec<String> = (0..n)
        .map(|i| format!("\"arn:aws:iam::123456789012:role/latch/r{i:03}\""))
        .collect();
    let text = crate::test_fixtures::claimed_policy_text().replace(
        "roles: [\"arn:aws:iam::123456789012:role/latch/app-deployer\"]",
        &format!("roles: [{}]", roles.join(", ")),
    );
    Policy::load(&text, "many roles").expect("policy")
}

fn role(i: usize) -> RoleArn {
    RoleArn::parse(&format!("arn:aws:iam::123456789012:role/latch/r{i:03}")).unwrap()
}

#[tokio::test]
async fn given_more_roles_than_one_run_can_check_when_runs_follow_then_the_cursor_covers_every_role() {
    let iam = MemoryIam::default();
    for i in 0..25 {
        iam.add_role(&role(i));
    }
    let s: Service = GrantService::new(
        many_roles_policy(25),
        Ports::new(
            iam,
            MemoryStore::default(),
            MemoryAuditSink::default(),
            FixedClock::at(t0()),
        ),
    );
    // Every role listed is one IAM call: 10 a second, 1.05 s a run → about 10 roles a run.
    let settings = SweepSettings {
        drift_iam_per_second: 10.0,
        cursor_every: 3,
        ..SweepSettings::default()
    };
    let mut seen = 0;
    let mut runs = 0;
    while seen < 25 {
        let stop_by = Instant::now() + StdDuration::from_millis(1050);
        let report = memory_sweeper(&s, settings.clone())
            .run_task(SweepTask::Drift, Some(stop_by), None)
            .await
            .unwrap();
        assert_eq!(report.drift_roles_eligible, 25);
        assert!(report.drift_roles_checked > 0, "every run makes progress");
        seen += report.drift_roles_checked;
        runs += 1;
        assert!(
            runs <= 4,
            "the old code restarted at the first role every run and never got past ~10"
        );
    }
    let listed = s.ports.iam.listed_roles();
    for i in 0..25 {
        assert!(listed.contains(&role(i).name().to_owned()), "role {i} never checked");
    }
}

#[tokio::test]
async fn given_a_pace_when_drift_repair_runs_then_iam_calls_are_spaced() {
    let iam = MemoryIam::default();
    for i in 0..5 {
        iam.add_role(&role(i));
    }
    let s: Service = GrantService::new(
        many_roles_policy(5),
        Ports::new(
            iam,
            MemoryStore::default(),
            MemoryAuditSink::default(),
            FixedClock::at(t0()),
        ),
    );
    let settings = SweepSettings {
        drift_iam_per_second: 20.0,
        ..SweepSettings::default()
    };
    let t = Instant::now();
    let report = memory_sweeper(&s, settings)
        .run_task(SweepTask::Drift, None, None)
        .await
        .unwrap();
    assert_eq!(report.drift_roles_checked, 5);
    assert!(report.drift_cycle_complete);
    // Five calls at 20 a second: the fifth waits four intervals.
    assert!(t.elapsed() >= StdDuration::from_millis(195), "{:?}", t.elapsed());
}

#[tokio::test]
async fn given_iam_failing_for_minutes_when_the_sweep_retries_then_one_revoke_failed_audit_and_event() {
    let s = service();
    start(&s, "f", DEPLOYER).await;
    s.ports.clock.advance(Duration::minutes(6));
    for _ in 0..3 {
        s.ports
            .iam
            .fail_next(IamError::Transient("Throttling: Rate exceeded".into()));
        let report = memory_sweeper(&s, fast(SweepSettings::default()))
            .run(None)
            .await
            .unwrap();
        assert_eq!(report.revoke_failed, 1);
        s.ports.clock.advance(Duration::minutes(1));
    }
    let failed: Vec<_> = s
        .ports
        .store
        .audits()
        .into_iter()
        .filter(|a| a.decision == Decision::RevokeFailed)
        .collect();
    assert_eq!(failed.len(), 1, "one per episode, not one a minute");
    let published = s
        .ports
        .audit
        .published()
        .into_iter()
        .filter(|a| a.decision == Decision::RevokeFailed)
        .count();
    assert_eq!(published, 1);
    let a = &failed[0];
    assert!(a.grant_id.is_some() && a.role_arn.is_some());
    assert!(
        a.detail.as_deref().unwrap().contains("Rate exceeded"),
        "what IAM answered"
    );
}

#[tokio::test]
async fn given_the_failure_event_lost_when_the_next_run_fails_again_then_it_publishes_it() {
    let s = service();
    start(&s, "f", DEPLOYER).await;
    s.ports.clock.advance(Duration::minutes(6));
    s.ports.iam.fail_next(IamError::Transient("Throttling".into()));
    s.ports
        .audit
        .fail_next(crate::ports::SinkError::Transient("bus down".into()));
    memory_sweeper(&s, fast(SweepSettings::default()))
        .run(None)
        .await
        .unwrap();
    s.ports.clock.advance(Duration::minutes(1));
    s.ports.iam.fail_next(IamError::Transient("Throttling".into()));
    memory_sweeper(&s, fast(SweepSettings::default()))
        .run(None)
        .await
        .unwrap();
    let published = s
        .ports
        .audit
        .published()
        .into_iter()
        .filter(|a| a.decision == Decision::RevokeFailed)
        .count();
    assert_eq!(
        published, 1,
        "at least once: the second attempt published what the first could not"
    );
}
