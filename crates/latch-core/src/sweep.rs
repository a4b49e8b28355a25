//! The sweep: the guarantee behind I2 and I4, run on a schedule, as two tasks.
//!
//! 1. [`SweepTask::Expired`]: expired grants, found through the store's expiry index (its cost
//!    follows the number of expired grants, not the table), are revoked page by page with
//!    reason `expired_sweep`: one role's grants one after another, up to `concurrency` roles at
//!    a time. Two writes on one role at once would only conflict (IAM's
//!    `ConcurrentModification`, DynamoDB's `TransactionConflict` on the role's counter) and
//!    wait for each other anyway. The deadline is checked before every revoke, so a slow page
//!    cannot run the invocation past its timeout. A revoke that fails is audited (`Latch Revoke
//!    Failed`, once per grant: [`crate::revoke::Revoker::record_failure`]) and, since its grant
//!    stays active in the index, retried by the next run.
//! 2. [`SweepTask::Drift`]: every inline policy of this deployment's name shape on a role the
//!    policy file makes eligible must belong to a live grant. One that does not, once seen for
//!    longer than the grace period, is deleted and audited as `Latch Drift Repaired`. Roles are
//!    visited in a fixed order from a cursor kept in the store, so a run that runs out of time
//!    leaves off where the next one starts, and IAM calls are paced
//!    ([`SweepSettings::drift_iam_per_second`]): the account's IAM rate is shared with
//!    Terraform and the console. Bound: with `r` calls a second and a budget of `b` seconds a
//!    run, a run checks at least `r·b / (1 + p)` roles holding `p` of Latch's policies each, so
//!    `N` eligible roles are all checked within `⌈N(1+p) / (r·b)⌉` runs.
//!
//! Each task holds a lease ([`SweepState::take_lease`], a conditional write with an expiry)
//! for its run: a run that finds the lease held by another live run does nothing, so runs of a
//! task never overlap; a run that dies leaves a lease that expires by itself. The sweep stops
//! starting new work when the deadline is near and leaves the rest to the next run; nothing it
//! does is lost by stopping (every step is idempotent).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use tracing::{error, info, warn};

use crate::audit;
use crate::model::{Deployment, Grant, POLICY_NAME_PREFIX, RoleArn};
use crate::policy::Policy;
use crate::ports::{
    AuditSink, Clock, Deletion, GrantStore, IamInventory, IamWriter, Ports, RecordState, StoreError,
    record_then_publish,
};
use crate::revoke::{RevokeError, RevokeOutcome, RevokeReason, Revoker};

/// The sweep's two scheduled tasks; each has its own lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SweepTask {
    /// Revoke grants past their expiry (every sweep interval).
    Expired,
    /// Find and remove Latch policies without a live grant (its own, slower schedule).
    Drift,
}

impl SweepTask {
    /// The lease's name; stable (it names a table item).
    pub fn code(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Drift => "drift",
        }
    }
}

/// The sweep's own bookkeeping in the store: run leases and the drift cursor.
pub trait SweepState: Send + Sync {
    /// Takes `task`'s lease for `holder` until `until`, unless another holder's lease is still
    /// unexpired at `now` (then `false`, and nothing is written). One conditional write.
    fn take_lease(
        &self,
        task: SweepTask,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Gives the lease back if `holder` still holds it (so the next run need not wait it out).
    fn release_lease(&self, task: SweepTask, holder: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The last role drift repair checked (its [`role_order_key`]), if any run recorded one.
    fn drift_cursor(&self) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    fn save_drift_cursor(&self, last_checked: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// [`SweepState`] in memory (tests, the crash harness).
#[derive(Debug, Default)]
pub struct MemorySweepState {
    leases: Mutex<HashMap<SweepTask, (String, DateTime<Utc>)>>,
    cursor: Mutex<Option<String>>,
}

impl SweepState for MemorySweepState {
    async fn take_lease(
        &self,
        task: SweepTask,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if leases.get(&task).is_some_and(|(h, u)| h != holder && *u > now) {
            return Ok(false);
        }
        leases.insert(task, (holder.to_owned(), until));
        Ok(true)
    }

    async fn release_lease(&self, task: SweepTask, holder: &str) -> Result<(), StoreError> {
        let mut leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        if leases.get(&task).is_some_and(|(h, _)| h == holder) {
            leases.remove(&task);
        }
        Ok(())
    }

    async fn drift_cursor(&self) -> Result<Option<String>, StoreError> {
        Ok(self.cursor.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    async fn save_drift_cursor(&self, last_checked: &str) -> Result<(), StoreError> {
        *self.cursor.lock().unwrap_or_else(|p| p.into_inner()) = Some(last_checked.to_owned());
        Ok(())
    }
}

/// The order drift repair visits roles in: IAM names are case-insensitive, so the lower-cased
/// ARN (a role is one role however it is spelled).
pub fn role_order_key(role: &RoleArn) -> String {
    role.as_str().to_ascii_lowercase()
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub revoked: usize,
    pub already_revoked: usize,
    /// IAM refused for good, or a transient failure: audited, retried next run.
    pub revoke_failed: usize,
    /// Revoked and recorded, but the event did not go out (the durable audit item stands).
    pub events_unpublished: usize,
    /// Expired grants the index returned to this run.
    pub expired_found: usize,
    /// Expired grants found but not started before the deadline: the next run's.
    pub not_reached: usize,
    /// How long past its expiry the oldest expired grant was when the run began (the lag).
    pub oldest_expired_secs: Option<i64>,
    /// For each grant this run revoked: seconds from its expiry to its revocation.
    pub revocation_lags_secs: Vec<i64>,
    pub drift_repaired: usize,
    /// Orphans seen, still within the grace period.
    pub drift_pending: usize,
    pub drift_errors: usize,
    /// Eligible roles drift repair checked this run, and how many there are.
    pub drift_roles_checked: usize,
    pub drift_roles_eligible: usize,
    /// Drift repair got round to every eligible role since its cursor (a full cycle).
    pub drift_cycle_complete: bool,
    /// Tasks this run skipped because another run held their lease.
    pub lease_held_elsewhere: Vec<SweepTask>,
    /// The deadline came first; the next run carries on.
    pub stopped_early: bool,
}

impl SweepReport {
    /// A grant revoked and recorded whose event did not go out. It has left the expiry index,
    /// so no later run sees it: the event is lost (the durable audit item is not). Said loudly
    /// rather than audited as a revoke that failed.
    fn note_unpublished(&mut self, grant: &Grant, error: &crate::ports::SinkError) {
        self.revoked += 1;
        self.events_unpublished += 1;
        error!(grant_id = %grant.id, error = %error, "grant revoked, but its audit event was not published");
    }

    /// Expired grants this run left behind: not reached in time, or failed.
    pub fn backlog(&self) -> usize {
        self.not_reached + self.revoke_failed
    }
}

/// A page's grants by role, each role's in page order, roles in order of first appearance.
/// IAM role names are case-insensitive, so ARNs differing only in case are one role.
fn by_role(page: &[Grant]) -> Vec<Vec<&Grant>> {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<&Grant>> = Vec::new();
    for g in page {
        let slot = *index.entry(g.role.as_str().to_ascii_lowercase()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[slot].push(g);
    }
    groups
}

#[derive(Debug, Clone)]
pub struct SweepSettings {
    pub page_size: u32,
    pub concurrency: usize,
    pub drift_grace: Duration,
    /// Drift repair looks only at this deployment's policy names.
    pub deployment: Deployment,
    /// IAM calls drift repair makes a second, at most (ListRolePolicies, DeleteRolePolicy).
    pub drift_iam_per_second: f64,
    /// How long a run's lease lasts when the invocation has no deadline (local runs).
    pub lease_for: Duration,
    /// Drift repair saves its cursor after this many roles (and when it stops).
    pub cursor_every: usize,
}

impl Default for SweepSettings {
    fn default() -> Self {
        Self {
            page_size: 100,
            concurrency: 8,
            drift_grace: Duration::minutes(10),
            deployment: Deployment::default(),
            drift_iam_per_second: 5.0,
            lease_for: Duration::seconds(60),
            cursor_every: 10,
        }
    }
}

/// Role listings drift repair keeps in flight: enough that IAM's latency, not the pace, is
/// never what bounds a run (4 in flight at 250 ms is 16 a second, over the default pace of 5).
const DRIFT_LISTINGS_IN_FLIGHT: usize = 4;

/// Spaces calls evenly, `per_second` at most (no burst: drift repair is never in a hurry).
struct Pacer {
    interval: std::time::Duration,
    next: Mutex<Option<tokio::time::Instant>>,
}

impl Pacer {
    fn new(per_second: f64) -> Self {
        let interval = if per_second.is_finite() && per_second > 0.0 {
            std::time::Duration::from_secs_f64(1.0 / per_second)
        } else {
            std::time::Duration::ZERO
        };
        Self {
            interval,
            next: Mutex::new(None),
        }
    }

    async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = tokio::time::Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// A sweep over borrowed ports and a role inventory; built by [`Ports::sweeper`].
pub struct Sweeper<'a, I, V, S, A, C> {
    policy: &'a Policy,
    ports: &'a Ports<I, S, A, C>,
    inventory: &'a V,
    pub settings: SweepSettings,
}

impl<I, S, A, C> Ports<I, S, A, C> {
    /// A sweep under `policy` through these ports, listing roles with `inventory`.
    pub fn sweeper<'a, V>(
        &'a self,
        policy: &'a Policy,
        inventory: &'a V,
        settings: SweepSettings,
    ) -> Sweeper<'a, I, V, S, A, C> {
        Sweeper {
            policy,
            ports: self,
            inventory,
            settings,
        }
    }
}

/// A lease holder's name, unique to this run (process, time, a counter).
fn run_holder() -> String {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}-{n}", std::process::id())
}

impl<I, V, S, A, C> Sweeper<'_, I, V, S, A, C>
where
    I: IamWriter,
    V: IamInventory,
    S: GrantStore + SweepState,
    A: AuditSink,
    C: Clock,
{
    fn revoker(&self) -> Revoker<'_, I, S, A, C> {
        self.ports.revoker()
    }

    /// Both tasks, one after the other (the local runner and tests; Lambda runs one task per
    /// schedule). `stop_by`: when to stop starting new work (the Lambda deadline less a margin).
    /// Err only when the store cannot be read at all (the scheduler retries).
    pub async fn run(&self, stop_by: Option<Instant>) -> Result<SweepReport, StoreError> {
        let mut report = self.run_task(SweepTask::Expired, stop_by, None).await?;
        if !report.stopped_early {
            let drift = self.run_task(SweepTask::Drift, stop_by, None).await?;
            report = merge(report, drift);
        }
        Ok(report)
    }

    /// One task under its lease. `lease_for`: how long the lease lasts (the invocation's
    /// remaining time and a little more); `None`: [`SweepSettings::lease_for`].
    pub async fn run_task(
        &self,
        task: SweepTask,
        stop_by: Option<Instant>,
        lease_for: Option<Duration>,
    ) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        let holder = run_holder();
        let now = self.ports.clock.now();
        let until = now + lease_for.unwrap_or(self.settings.lease_for);
        if !self.ports.store.take_lease(task, &holder, now, until).await? {
            info!(task = task.code(), "another run holds the lease; nothing to do");
            report.lease_held_elsewhere.push(task);
            return Ok(report);
        }
        let out_of_time = || stop_by.is_some_and(|t| Instant::now() >= t);
        let result = match task {
            SweepTask::Expired => self.revoke_expired(&mut report, &out_of_time).await,
            SweepTask::Drift => {
                self.repair_drift(&mut report, &out_of_time).await;
                Ok(())
            }
        };
        if let Err(e) = self.ports.store.release_lease(task, &holder).await {
            // It expires by itself; the next run waits at most until then.
            warn!(task = task.code(), error = %e, "could not release the sweep lease");
        }
        result?;
        info!(task = task.code(), ?report, "sweep done");
        Ok(report)
    }

    async fn revoke_expired(
        &self,
        report: &mut SweepReport,
        out_of_time: &impl Fn() -> bool,
    ) -> Result<(), StoreError> {
        let now = self.ports.clock.now();
        let mut after: Option<Grant> = None;
        loop {
            if out_of_time() {
                report.stopped_early = true;
                break;
            }
            let page = self
                .ports
                .store
                .expired_grants(now, after.as_ref(), self.settings.page_size)
                .await?;
            if report.oldest_expired_secs.is_none() {
                report.oldest_expired_secs = page.first().map(|g| (now - g.expires_at).num_seconds().max(0));
            }
            report.expired_found += page.len();
            let revoker = &self.revoker();
            let results: Vec<_> = futures::stream::iter(by_role(&page))
                .map(|grants| async move {
                    let mut results = Vec::with_capacity(grants.len());
                    for g in grants {
                        // Before each revoke, not each page: at IAM's latency under throttling a
                        // page of one role's grants can outlast the margin.
                        if out_of_time() {
                            results.push((g, None));
                            continue;
                        }
                        let result = revoker
                            .revoke(g, RevokeReason::ExpiredSweep, RecordState::Present)
                            .await;
                        results.push((g, Some(result)));
                    }
                    results
                })
                .buffer_unordered(self.settings.concurrency.max(1))
                .flat_map(futures::stream::iter)
                .collect()
                .await;
            for (grant, result) in results {
                let Some(result) = result else {
                    report.not_reached += 1;
                    report.stopped_early = true;
                    continue;
                };
                self.tally(report, grant, result, revoker).await;
            }
            let full = page.len() as u32 >= self.settings.page_size;
            after = page.into_iter().last();
            if !full || report.stopped_early {
                break;
            }
        }
        Ok(())
    }

    async fn tally(
        &self,
        report: &mut SweepReport,
        grant: &Grant,
        result: Result<RevokeOutcome, RevokeError>,
        revoker: &Revoker<'_, I, S, A, C>,
    ) {
        match result {
            Ok(RevokeOutcome::Revoked) => {
                report.revoked += 1;
                let lag = self.ports.clock.now() - grant.expires_at;
                report.revocation_lags_secs.push(lag.num_seconds());
            }
            Ok(RevokeOutcome::AlreadyRevoked) => report.already_revoked += 1,
            Ok(RevokeOutcome::Failed(_)) => report.revoke_failed += 1,
            Err(RevokeError::EventNotPublished(e)) => report.note_unpublished(grant, &e),
            // The write may have been applied with its answer lost: the grant has then
            // left the index, and only this run can still publish its event.
            Err(e) => match revoker.settle_after_error(grant).await {
                Ok(true) => {
                    report.revoked += 1;
                    warn!(grant_id = %grant.id, error = %e, "revoke reported an error but is recorded; event published");
                }
                Err(RevokeError::EventNotPublished(e)) => report.note_unpublished(grant, &e),
                Ok(false) | Err(_) => {
                    report.revoke_failed += 1;
                    if let Err(audit_error) = revoker
                        .record_failure(grant, RevokeReason::ExpiredSweep, &e.to_string())
                        .await
                    {
                        warn!(grant_id = %grant.id, error = %audit_error, "could not audit a failed revoke");
                    }
                }
            },
        }
    }

    /// The eligible roles, one per role whatever its spelling, in [`role_order_key`] order.
    async fn eligible_roles(&self) -> Result<Vec<RoleArn>, crate::ports::IamError> {
        let roles = self.inventory.roles_under(&self.policy.elevatable_path).await?;
        let mut roles: Vec<(String, RoleArn)> = roles
            .into_iter()
            .filter(|r| self.policy.is_eligible_role(r))
            .map(|r| (role_order_key(&r), r))
            .collect();
        roles.sort_by(|a, b| a.0.cmp(&b.0));
        roles.dedup_by(|a, b| a.0 == b.0);
        Ok(roles.into_iter().map(|(_, r)| r).collect())
    }

    async fn repair_drift(&self, report: &mut SweepReport, out_of_time: &impl Fn() -> bool) {
        let roles = match self.eligible_roles().await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "drift repair: cannot list roles");
                report.drift_errors += 1;
                return;
            }
        };
        report.drift_roles_eligible = roles.len();
        let cursor = match self.ports.store.drift_cursor().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "drift repair: cannot read its cursor; starting from the first role");
                None
            }
        };
        // The first role after the cursor, wrapping round: every role gets its turn even when
        // no single run reaches the end of the list.
        let start = cursor
            .as_deref()
            .map_or(0, |c| roles.partition_point(|r| role_order_key(r).as_str() <= c));
        let pacer = Pacer::new(self.settings.drift_iam_per_second);
        let mut last_checked: Option<String> = None;
        let mut unsaved = 0;
        // Listings overlap (IAM answers in 100–300 ms, slower than the pace allows), in order,
        // so the cursor only ever moves past roles whose every policy was checked.
        let pacer_ref = &pacer;
        let mut listings = futures::stream::iter(roles[start..].iter().chain(roles[..start].iter()))
            .map(|role| async move {
                pacer_ref.wait().await;
                if out_of_time() {
                    return None;
                }
                Some((role, self.inventory.inline_policies(role).await))
            })
            .buffered(DRIFT_LISTINGS_IN_FLIGHT);
        while let Some(listing) = listings.next().await {
            let Some((role, listed)) = listing else {
                report.stopped_early = true;
                break;
            };
            match listed {
                Ok(names) => {
                    for name in names.iter().filter(|n| n.starts_with(POLICY_NAME_PREFIX)) {
                        if let Err(e) = self.check_policy(role, name, report, &pacer).await {
                            warn!(role = %role, policy = %name, error = %e, "drift repair failed for a policy");
                            report.drift_errors += 1;
                        }
                    }
                }
                Err(e) => {
                    warn!(role = %role, error = %e, "drift repair: cannot list policies");
                    report.drift_errors += 1;
                }
            }
            report.drift_roles_checked += 1;
            last_checked = Some(role_order_key(role));
            unsaved += 1;
            if unsaved >= self.settings.cursor_every.max(1) {
                self.save_cursor(last_checked.as_deref()).await;
                unsaved = 0;
            }
        }
        drop(listings);
        if unsaved > 0 {
            self.save_cursor(last_checked.as_deref()).await;
        }
        report.drift_cycle_complete = report.drift_roles_checked == roles.len();
    }

    async fn save_cursor(&self, last_checked: Option<&str>) {
        if let Some(key) = last_checked
            && let Err(e) = self.ports.store.save_drift_cursor(key).await
        {
            // The next run starts a little earlier in the list: it rechecks, never skips.
            warn!(error = %e, "drift repair: cannot save its cursor");
        }
    }

    async fn check_policy(
        &self,
        role: &RoleArn,
        name: &str,
        report: &mut SweepReport,
        pacer: &Pacer,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        // Only names of Latch's own exact shape: a team's `latch-guardrails` is not ours.
        let Some(id) = self.settings.deployment.grant_id_of(name) else {
            return Ok(());
        };
        let recorded = self.ports.store.grant(&id).await?;
        if recorded.as_ref().is_some_and(|g| g.status.is_live() && &g.role == role) {
            return Ok(());
        }
        let now = self.ports.clock.now();
        // A grant the record says is over (revoked, failed) needs no grace: its document is a
        // late attach and comes off now. Only a document with no record at all waits out the
        // grace, in case its grant is being written as we look.
        let ended = recorded.is_some_and(|g| !g.status.is_live());
        let since = self.ports.store.drift_seen_since(role, name, now).await?;
        if !ended && now - since < self.settings.drift_grace {
            report.drift_pending += 1;
            return Ok(());
        }

        // Read what is deleted (for the record), then delete it: two IAM calls, each paced.
        pacer.wait().await;
        let deleted = self.inventory.inline_policy_document(role, name).await?;
        pacer.wait().await;
        if self.ports.iam.delete_role_policy(role, name).await? == Deletion::AlreadyGone {
            // Its revoke (or another repair) took it off since the listing: nothing drifted.
            self.ports.store.clear_drift(role, name).await?;
            return Ok(());
        }
        let mut audit = audit::drift_repair(role, name, Some(&id), since, deleted.as_deref(), now);
        audit.decided_under(&self.policy.file_sha256, self.policy.label.as_deref());
        record_then_publish::<_, _, Box<dyn std::error::Error + Send + Sync>>(
            &self.ports.store,
            &self.ports.audit,
            audit,
        )
        .await?;
        self.ports.store.clear_drift(role, name).await?;
        report.drift_repaired += 1;
        info!(role = %role, policy = name, "drift repaired");
        Ok(())
    }
}

/// Two task reports as one (the local runner's combined run).
fn merge(a: SweepReport, b: SweepReport) -> SweepReport {
    SweepReport {
        revoked: a.revoked + b.revoked,
        already_revoked: a.already_revoked + b.already_revoked,
        revoke_failed: a.revoke_failed + b.revoke_failed,
        events_unpublished: a.events_unpublished + b.events_unpublished,
        expired_found: a.expired_found + b.expired_found,
        not_reached: a.not_reached + b.not_reached,
        oldest_expired_secs: a.oldest_expired_secs.or(b.oldest_expired_secs),
        revocation_lags_secs: [a.revocation_lags_secs, b.revocation_lags_secs].concat(),
        drift_repaired: a.drift_repaired + b.drift_repaired,
        drift_pending: a.drift_pending + b.drift_pending,
        drift_errors: a.drift_errors + b.drift_errors,
        drift_roles_checked: a.drift_roles_checked + b.drift_roles_checked,
        drift_roles_eligible: a.drift_roles_eligible.max(b.drift_roles_eligible),
        drift_cycle_complete: a.drift_cycle_complete || b.drift_cycle_complete,
        lease_held_elsewhere: [a.lease_held_elsewhere, b.lease_held_elsewhere].concat(),
        stopped_early: a.stopped_early || b.stopped_early,
    }
}

#[cfg(test)]
#[path = "sweep_tests.rs"]
mod tests;
