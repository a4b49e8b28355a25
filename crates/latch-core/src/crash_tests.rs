//! Crash points: for every boundary between two side effects of the grant,
//! finish, revoke and sweep sequences, the process dies there (every later port call fails,
//! untouched) and the event is handled again, as Lambda retries it. The state must converge:
//! exactly the grants the events call for, a policy on the role iff its grant is active,
//! exactly one durable audit item per decision, and every durable audit published at least
//! once under its own id (nothing published that is not durable). Each case is named by its
//! crash point, and a failure quotes it.

use chrono::Duration;
use serde_json::{Value, json};

use crate::audit::Decision;
use crate::grant::{FinishOutcome, StartOutcome};
use crate::memory::{Faults, Op};
use crate::model::GrantStatus;
use crate::sweep::SweepSettings;
use crate::test_fixtures::{MemoryService as Service, deployer as role, envelope, memory_service, memory_sweeper, t0};

fn service(faults: &Faults) -> Service {
    memory_service(t0() + Duration::seconds(2), faults)
}

fn start_detail(permission_set: &str) -> Value {
    json!({"pipeline": "app-release", "run_id": "4711", "job": "deploy", "attempt": 1,
           "role_arn": role().as_str(), "permission_set": permission_set, "duration": "PT15M",
           "ref": "refs/heads/main"})
}

/// One delivery of an event, as Lambda would invoke the grant function (or the schedule the sweep).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    /// `Pipeline Job Started` for the job, with this permission set.
    Start(&'static str),
    /// A start the policy denies (role outside the rule): one Denied audit.
    DeniedStart,
    Finish,
    /// A sweep run; the retry is the next run, a minute later.
    Sweep,
}

/// Whether a delivery ended in `Err` (what makes Lambda retry) and what it reported otherwise.
async fn deliver(s: &Service, event: Event) -> Result<String, String> {
    let d = |v: Value| (v.to_string().len(), v);
    match event {
        Event::Start(set) => {
            let (len, detail) = d(start_detail(set));
            let env = envelope("Pipeline Job Started", &format!("start-{set}"));
            s.on_start(&env, &detail, len)
                .await
                .map(|o| format!("{o:?}"))
                .map_err(|e| e.to_string())
        }
        Event::DeniedStart => {
            let mut detail = start_detail("deploy-artifacts");
            detail["role_arn"] = json!("arn:aws:iam::123456789012:role/latch/db-migrator");
            let (len, detail) = d(detail);
            let env = envelope("Pipeline Job Started", "start-denied");
            s.on_start(&env, &detail, len)
                .await
                .map(|o| format!("{o:?}"))
                .map_err(|e| e.to_string())
        }
        Event::Finish => {
            let (len, detail) = d(json!({"pipeline": "app-release", "run_id": "4711", "job": "deploy",
                                         "attempt": 1, "outcome": "success"}));
            s.on_finish(&envelope("Pipeline Job Finished", "finish"), &detail, len)
                .await
                .map(|o| format!("{o:?}"))
                .map_err(|e| e.to_string())
        }
        Event::Sweep => memory_sweeper(s, SweepSettings::default())
            .run(None)
            .await
            .map(|r| format!("{r:?}"))
            .map_err(|e| e.to_string()),
    }
}

/// A crash point: what ran before, where the process dies, what the converged state is.
struct Case {
    name: &'static str,
    given: &'static [Event],
    /// Time passing between the given events and the crashing one (the sweep needs expiry).
    then_wait: Duration,
    event: Event,
    /// The `nth` call of this operation, counted from the crashing delivery, is where it dies.
    /// `None`: it dies after its last side effect, before Lambda hears back (a plain redelivery).
    crash_at: Option<(Op, usize)>,
    expect: Expect,
}

impl Case {
    /// A start that is granted.
    fn grant(name: &'static str, crash_at: Option<(Op, usize)>) -> Self {
        Self {
            name,
            given: &[],
            then_wait: Duration::zero(),
            event: Event::Start("deploy-artifacts"),
            crash_at,
            expect: GRANTED,
        }
    }

    /// A start that is denied.
    fn deny(name: &'static str, crash_at: Option<(Op, usize)>) -> Self {
        Self {
            name,
            given: &[],
            then_wait: Duration::zero(),
            event: Event::DeniedStart,
            crash_at,
            expect: DENIED,
        }
    }

    /// The finish of a job holding two grants.
    fn finish(name: &'static str, crash_at: Option<(Op, usize)>) -> Self {
        Self {
            name,
            given: TWO_GRANTS,
            then_wait: Duration::minutes(1),
            event: Event::Finish,
            crash_at,
            expect: BOTH_REVOKED,
        }
    }

    /// A sweep run after one grant expired.
    fn sweep(name: &'static str, crash_at: Option<(Op, usize)>) -> Self {
        Self {
            name,
            given: ONE_GRANT,
            then_wait: Duration::minutes(16),
            event: Event::Sweep,
            crash_at,
            expect: ONE_REVOKED,
        }
    }
}

struct Expect {
    active: usize,
    revoked: usize,
    activated_audits: usize,
    revoked_audits: usize,
    denied_audits: usize,
}

const GRANTED: Expect = Expect {
    active: 1,
    revoked: 0,
    activated_audits: 1,
    revoked_audits: 0,
    denied_audits: 0,
};
const BOTH_REVOKED: Expect = Expect {
    active: 0,
    revoked: 2,
    activated_audits: 2,
    revoked_audits: 2,
    denied_audits: 0,
};
const ONE_REVOKED: Expect = Expect {
    active: 0,
    revoked: 1,
    activated_audits: 1,
    revoked_audits: 1,
    denied_audits: 0,
};
const DENIED: Expect = Expect {
    active: 0,
    revoked: 0,
    activated_audits: 0,
    revoked_audits: 0,
    denied_audits: 1,
};

const TWO_GRANTS: &[Event] = &[Event::Start("deploy-artifacts"), Event::Start("lambda-deploy")];
const ONE_GRANT: &[Event] = &[Event::Start("deploy-artifacts")];

fn cases_that_converge() -> Vec<Case> {
    let (grant, deny, finish, sweep) = (Case::grant, Case::deny, Case::finish, Case::sweep);
    vec![
        grant(
            "grant: before the DynamoDB transaction",
            Some((Op::RecordActivation, 1)),
        ),
        grant(
            "grant: after the DynamoDB transaction, before PutRolePolicy",
            Some((Op::PutRolePolicy, 1)),
        ),
        grant(
            "grant: after PutRolePolicy, before the activation is confirmed",
            Some((Op::ConfirmActivation, 1)),
        ),
        grant("grant: after PutRolePolicy, before PutEvents", Some((Op::PutEvents, 1))),
        grant("grant: after PutEvents, before Lambda hears back", None),
        deny("deny: before the audit item", Some((Op::RecordAudit, 1))),
        finish("finish: before finish_job", Some((Op::FinishJob, 1))),
        finish(
            "finish: after finish_job, before the first revoke (DeleteRolePolicy 1)",
            Some((Op::DeleteRolePolicy, 1)),
        ),
        finish(
            "finish: after the first revoke, before the second (DeleteRolePolicy 2)",
            Some((Op::DeleteRolePolicy, 2)),
        ),
        finish(
            "finish/revoke 1: after DeleteRolePolicy, before the store write",
            Some((Op::RecordRevocation, 1)),
        ),
        finish(
            "finish/revoke 2: after DeleteRolePolicy, before the store write",
            Some((Op::RecordRevocation, 2)),
        ),
        finish("finish: after the last PutEvents, before Lambda hears back", None),
        sweep(
            "sweep revoke: after DeleteRolePolicy, before the store write",
            Some((Op::RecordRevocation, 1)),
        ),
        sweep(
            "sweep revoke: before the expiry index query",
            Some((Op::ExpiredGrants, 1)),
        ),
    ]
}

/// Crash points between a durable audit item and its event: the retry finds the item and
/// publishes the stored record again. Not here: the sweep dying between its store write and
/// PutEvents. The revoked grant has left the expiry index, so no later sweep looks at it again
/// and that event is lost; the durable audit item (what exports read) is there. Closing that
/// window without a second write per revoke needs the audit events published from the table's
/// stream (an outbox).
fn cases_between_the_audit_item_and_its_event() -> Vec<Case> {
    let (deny, finish) = (Case::deny, Case::finish);
    vec![
        finish(
            "finish/revoke 1: after the store write, before PutEvents",
            Some((Op::PutEvents, 1)),
        ),
        finish(
            "finish/revoke 2: after the store write, before PutEvents",
            Some((Op::PutEvents, 2)),
        ),
        deny("deny: after the audit item, before PutEvents", Some((Op::PutEvents, 1))),
    ]
}

/// Runs one case and returns what is wrong with the converged state (empty: nothing).
async fn run(case: &Case) -> Vec<String> {
    let faults = Faults::default();
    let s = service(&faults);
    let mut problems = Vec::new();
    for &e in case.given {
        if let Err(e) = deliver(&s, e).await {
            problems.push(format!("setup event failed: {e}"));
        }
    }
    s.ports.clock.advance(case.then_wait);
    if let Some((op, nth)) = case.crash_at {
        faults.crash_at(op, nth);
    }
    let first = deliver(&s, case.event).await;
    match case.crash_at {
        Some(_) if !faults.crashed() => problems.push("the crash point was never reached".into()),
        // The sweep audits its own failures and carries on; other handlers must ask for a retry.
        Some(_) if case.event != Event::Sweep && first.is_ok() => problems.push(format!(
            "the crashed delivery returned Ok ({first:?}); Lambda would not retry"
        )),
        _ => {}
    }
    faults.restart();
    if case.event == Event::Sweep {
        s.ports.clock.advance(Duration::minutes(1));
    }
    if let Err(e) = deliver(&s, case.event).await {
        problems.push(format!("the retry failed: {e}"));
    }
    check_state(&s, &case.expect, &mut problems);
    problems
}

fn check_state(s: &Service, expect: &Expect, problems: &mut Vec<String>) {
    let grants = s.ports.store.grants();
    let count = |status| grants.iter().filter(|g| g.status == status).count();
    let (active, revoked) = (count(GrantStatus::Active), count(GrantStatus::Revoked));
    if (active, revoked) != (expect.active, expect.revoked) {
        problems.push(format!(
            "grants active/revoked = {active}/{revoked}, want {}/{}",
            expect.active, expect.revoked
        ));
    }
    for g in &grants {
        let has_policy = s.ports.iam.policy(&g.role, &g.id.policy_name()).is_some();
        if has_policy != (g.status == GrantStatus::Active) {
            problems.push(format!(
                "grant {} is {:?} but its policy is {}",
                g.id,
                g.status,
                if has_policy { "on the role" } else { "absent" }
            ));
        }
    }
    if s.ports.iam.policy_count() != active {
        problems.push(format!(
            "{} policies on roles, {active} active grants",
            s.ports.iam.policy_count()
        ));
    }
    if s.ports.store.active_on(&role()) as usize != active {
        problems.push(format!(
            "role counter {} != {active} active grants",
            s.ports.store.active_on(&role())
        ));
    }
    let audits = s.ports.store.audits();
    let decided = |d| audits.iter().filter(|a| a.decision == d).count();
    let got = (
        decided(Decision::Activated),
        decided(Decision::Revoked),
        decided(Decision::Denied),
    );
    let want = (expect.activated_audits, expect.revoked_audits, expect.denied_audits);
    if got != want || audits.len() != got.0 + got.1 + got.2 {
        problems.push(format!(
            "durable audits activated/revoked/denied = {got:?} (of {}), want {want:?}",
            audits.len()
        ));
    }
    let published = s.ports.audit.published();
    for a in &audits {
        if !published.iter().any(|p| p.audit_id == a.audit_id) {
            problems.push(format!(
                "durable audit {} ({:?}) was never published",
                a.audit_id, a.decision
            ));
        }
    }
    for p in &published {
        if !audits.iter().any(|a| a.audit_id == p.audit_id) {
            problems.push(format!(
                "published audit {} ({:?}) has no durable item",
                p.audit_id, p.decision
            ));
        }
    }
}

async fn failures(cases: Vec<Case>) -> Vec<String> {
    let mut failed = Vec::new();
    for case in &cases {
        for p in run(case).await {
            failed.push(format!("[{}] {p}", case.name));
        }
    }
    failed
}

/// Between an audit item and its event, the retry finds the audit recorded and publishes the
/// stored record again, under its id.
#[tokio::test]
async fn given_a_crash_at_each_boundary_when_lambda_retries_then_state_converges() {
    let mut cases = cases_that_converge();
    cases.extend(cases_between_the_audit_item_and_its_event());
    let failed = failures(cases).await;
    assert!(
        failed.is_empty(),
        "crash points that did not converge:\n{}",
        failed.join("\n")
    );
}

/// The harness itself: a crash that is never retried leaves the state the retry must repair,
/// so the converging cases above are not vacuous.
#[tokio::test]
async fn given_a_crash_after_the_transaction_when_not_retried_then_the_state_is_not_converged() {
    let faults = Faults::default();
    let s = service(&faults);
    faults.crash_at(Op::PutRolePolicy, 1);
    assert!(deliver(&s, Event::Start("deploy-artifacts")).await.is_err());
    assert!(faults.crashed());
    let mut problems = Vec::new();
    check_state(&s, &GRANTED, &mut problems);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    // The grant is recorded pending (I8: not active before IAM has its document).
    assert!(problems[0].contains("grants active/revoked = 0/0"), "{problems:#?}");
}

#[tokio::test]
async fn given_planned_faults_when_calls_are_made_then_only_the_nth_fails_and_a_crash_takes_all_ports_down() {
    let faults = Faults::default();
    let s = service(&faults);
    faults.fail_nth(Op::PutEvents, 2);
    let StartOutcome::Activated(_) = s
        .on_start(
            &envelope("Pipeline Job Started", "a"),
            &start_detail("deploy-artifacts"),
            200,
        )
        .await
        .unwrap()
    else {
        panic!("first start should be activated")
    };
    assert!(
        s.on_start(
            &envelope("Pipeline Job Started", "b"),
            &start_detail("lambda-deploy"),
            200
        )
        .await
        .is_err()
    );
    assert!(!faults.crashed());
    assert_eq!(faults.calls(Op::PutEvents), 2);
    faults.crash_at(Op::FinishJob, 1);
    let finish = json!({"pipeline": "app-release", "run_id": "4711", "job": "deploy", "attempt": 1});
    assert!(
        s.on_finish(&envelope("Pipeline Job Finished", "f"), &finish, 80)
            .await
            .is_err()
    );
    assert!(faults.crashed());
    assert!(
        s.on_finish(&envelope("Pipeline Job Finished", "f"), &finish, 80)
            .await
            .is_err(),
        "every call fails while down"
    );
    faults.restart();
    assert_eq!(
        s.on_finish(&envelope("Pipeline Job Finished", "f"), &finish, 80)
            .await
            .unwrap(),
        FinishOutcome::Finished {
            revoked: 2,
            already_ended: 0,
            failed: 0
        }
    );
}
