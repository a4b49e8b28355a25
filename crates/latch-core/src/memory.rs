//! In-memory implementations of every port, for unit tests and examples. They keep what was
//! written so tests can assert on state, and they can be told to fail the next call
//! (`fail_next`, per port) or, through a shared [`Faults`], the Nth call of one operation, or
//! to "crash" there: that call and every later call on every port sharing it fail, untouched,
//! until [`Faults::restart`] — what a Lambda process dying at that point leaves behind.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use crate::audit::AuditRecord;
use crate::model::{AccountId, Grant, GrantId, GrantStatus, JobKey, RoleArn};
use crate::native::NativeJob;
use crate::policy::PolicyDocument;
use crate::ports::{
    Activation, AuditSink, AuditWrite, Clock, Confirmation, Deletion, Extension, GrantStore, IamError, IamInventory,
    IamWriter, NativeLookupError, NativeRun, NativeRuns, RateWindow, RecordState, ResolvedRole, Revocation, RoleLimits,
    SinkError, StoreError, TokenUse,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock has already failed; keep going for its report.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A port operation, as [`Faults`] counts and fails it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    PutRolePolicy,
    DeleteRolePolicy,
    ResolveRole,
    ListRoles,
    ListRolePolicies,
    RecordActivation,
    ConfirmActivation,
    RecordFailure,
    RecordExtension,
    RecordAudit,
    FinishJob,
    RecordRevocation,
    ExpiredGrants,
    GetGrant,
    GetAudit,
    DriftSeenSince,
    ClearDrift,
    PutEvents,
    LookUpNativeRun,
}

/// Call counts and planned failures, shared by the ports of one test (`with_faults`). A failed
/// call has no effect, and is reported as the port's transient error: the handler returns
/// `Err`, which is what makes Lambda retry the event.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<FaultState>>);

#[derive(Debug, Default)]
struct FaultState {
    calls: HashMap<Op, usize>,
    /// (operation, absolute call number, whether the process dies there).
    planned: Vec<(Op, usize, bool)>,
    down: bool,
}

impl Faults {
    /// Fails the `nth` (1-based) call of `op` counted from now, once.
    pub fn fail_nth(&self, op: Op, nth: usize) {
        self.plan(op, nth, false);
    }

    /// The process dies at the `nth` (1-based) call of `op` counted from now: that call and
    /// every later call on any port fail without effect, until [`Faults::restart`].
    pub fn crash_at(&self, op: Op, nth: usize) {
        self.plan(op, nth, true);
    }

    fn plan(&self, op: Op, nth: usize, crash: bool) {
        let mut s = lock(&self.0);
        let at = s.calls.get(&op).copied().unwrap_or(0) + nth.max(1);
        s.planned.push((op, at, crash));
    }

    /// A fresh process (the retry): the ports work again and pending plans are dropped.
    pub fn restart(&self) {
        let mut s = lock(&self.0);
        s.down = false;
        s.planned.clear();
    }

    /// Whether a planned crash has happened (and no restart since).
    pub fn crashed(&self) -> bool {
        lock(&self.0).down
    }

    /// Calls of `op` so far, failed ones included.
    pub fn calls(&self, op: Op) -> usize {
        lock(&self.0).calls.get(&op).copied().unwrap_or(0)
    }

    /// Counts the call; `Err` (with a message for the port's error) when it must fail.
    fn check(&self, op: Op) -> Result<(), String> {
        let mut s = lock(&self.0);
        let n = {
            let c = s.calls.entry(op).or_insert(0);
            *c += 1;
            *c
        };
        if s.down {
            return Err(format!("injected: process down before {op:?} call {n}"));
        }
        if let Some(i) = s.planned.iter().position(|&(o, at, _)| o == op && at == n) {
            let (_, _, crash) = s.planned.remove(i);
            s.down = crash;
            let what = if crash { "crash" } else { "failure" };
            return Err(format!("injected {what} at {op:?} call {n}"));
        }
        Ok(())
    }
}

/// A clock tests can set and move.
#[derive(Debug, Clone)]
pub struct FixedClock(Arc<Mutex<DateTime<Utc>>>);

impl FixedClock {
    pub fn at(t: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(t)))
    }
    pub fn set(&self, t: DateTime<Utc>) {
        *lock(&self.0) = t;
    }
    pub fn advance(&self, by: chrono::Duration) {
        let mut t = lock(&self.0);
        *t += by;
    }
}

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        *lock(&self.0)
    }
}

/// Inline policies per role name, plus a count of calls and queued failures.
#[derive(Debug, Clone, Default)]
pub struct MemoryIam {
    inner: Arc<Mutex<IamState>>,
    faults: Faults,
}

#[derive(Debug, Default)]
struct IamState {
    policies: BTreeMap<(String, String), String>,
    /// Roles as IAM would resolve them (any other role resolves as asked).
    known_roles: Vec<ResolvedRole>,
    roles: Vec<RoleArn>,
    puts: usize,
    deletes: usize,
    fail_next: VecDeque<IamError>,
    /// How long each DeleteRolePolicy takes (IAM's latency, for deadline tests).
    delete_delay: std::time::Duration,
    /// Role names drift repair listed the policies of, in order.
    listed: Vec<String>,
    /// DeleteRolePolicy calls in flight now, and the most there ever were (overall, one role).
    deletes_in_flight: HashMap<String, usize>,
    max_deletes_in_flight: usize,
    max_deletes_in_flight_per_role: usize,
}

impl MemoryIam {
    /// Shares `faults` with this port (clones share it too).
    pub fn with_faults(self, faults: &Faults) -> Self {
        Self {
            faults: faults.clone(),
            ..self
        }
    }
    /// IAM resolves roles of this name (case-insensitively) as `role`.
    pub fn with_role(self, role: ResolvedRole) -> Self {
        lock(&self.inner).known_roles.push(role);
        self
    }

    pub fn policy(&self, role: &RoleArn, name: &str) -> Option<String> {
        lock(&self.inner)
            .policies
            .get(&(role.name().to_owned(), name.to_owned()))
            .cloned()
    }
    pub fn policy_count(&self) -> usize {
        lock(&self.inner).policies.len()
    }
    pub fn calls(&self) -> (usize, usize) {
        let s = lock(&self.inner);
        (s.puts, s.deletes)
    }
    pub fn fail_next(&self, e: IamError) {
        lock(&self.inner).fail_next.push_back(e);
    }
    /// Makes a role known to the inventory (drift repair lists roles).
    pub fn add_role(&self, role: &RoleArn) {
        lock(&self.inner).roles.push(role.clone());
    }
    /// Every later DeleteRolePolicy takes `delay` before it answers.
    pub fn set_delay(&self, delay: std::time::Duration) {
        lock(&self.inner).delete_delay = delay;
    }
    /// The most DeleteRolePolicy calls that were in flight at once: overall, and on one role.
    pub fn max_deletes_in_flight(&self) -> (usize, usize) {
        let s = lock(&self.inner);
        (s.max_deletes_in_flight, s.max_deletes_in_flight_per_role)
    }
    /// The roles whose inline policies were listed, in order.
    pub fn listed_roles(&self) -> Vec<String> {
        lock(&self.inner).listed.clone()
    }
    /// Puts a policy directly, as someone outside Latch would (drift).
    pub fn plant(&self, role: &RoleArn, name: &str, document: &str) {
        lock(&self.inner)
            .policies
            .insert((role.name().to_owned(), name.to_owned()), document.to_owned());
    }
}

impl IamInventory for MemoryIam {
    async fn roles_under(&self, path_prefix: &str) -> Result<Vec<RoleArn>, IamError> {
        self.faults.check(Op::ListRoles).map_err(IamError::Transient)?;
        Ok(lock(&self.inner)
            .roles
            .iter()
            .filter(|r| r.is_under_path(path_prefix))
            .cloned()
            .collect())
    }

    async fn inline_policies(&self, role: &RoleArn) -> Result<Vec<String>, IamError> {
        self.faults.check(Op::ListRolePolicies).map_err(IamError::Transient)?;
        let mut s = lock(&self.inner);
        s.listed.push(role.name().to_owned());
        Ok(s.policies
            .keys()
            .filter(|(r, _)| r == role.name())
            .map(|(_, n)| n.clone())
            .collect())
    }

    async fn inline_policy_document(&self, role: &RoleArn, policy_name: &str) -> Result<Option<String>, IamError> {
        Ok(lock(&self.inner)
            .policies
            .get(&(role.name().to_owned(), policy_name.to_owned()))
            .cloned())
    }
}

impl IamWriter for MemoryIam {
    /// Every role exists as asked, with a stable id, the boundary, and no policies of its own,
    /// unless [`MemoryIam::with_role`] said otherwise.
    async fn resolve_role(&self, role: &RoleArn) -> Result<ResolvedRole, IamError> {
        self.faults.check(Op::ResolveRole).map_err(IamError::Transient)?;
        let s = lock(&self.inner);
        if let Some(known) = s
            .known_roles
            .iter()
            .find(|r| r.arn.name().eq_ignore_ascii_case(role.name()))
        {
            return Ok(known.clone());
        }
        Ok(ResolvedRole {
            arn: role.clone(),
            role_id: format!("AROA{}", &crate::model::digest(&[role.name()])[..16].to_uppercase()),
            has_required_boundary: true,
            own_inline_chars: 0,
        })
    }

    async fn put_role_policy(&self, role: &RoleArn, name: &str, document: &PolicyDocument) -> Result<(), IamError> {
        self.faults.check(Op::PutRolePolicy).map_err(IamError::Transient)?;
        let mut s = lock(&self.inner);
        s.puts += 1;
        if let Some(e) = s.fail_next.pop_front() {
            return Err(e);
        }
        s.policies
            .insert((role.name().to_owned(), name.to_owned()), document.as_json().to_owned());
        Ok(())
    }

    async fn delete_role_policy(&self, role: &RoleArn, name: &str) -> Result<Deletion, IamError> {
        self.faults.check(Op::DeleteRolePolicy).map_err(IamError::Transient)?;
        let delay = lock(&self.inner).delete_delay;
        if !delay.is_zero() {
            let key = role.name().to_ascii_lowercase();
            {
                let mut s = lock(&self.inner);
                *s.deletes_in_flight.entry(key.clone()).or_default() += 1;
                let total: usize = s.deletes_in_flight.values().sum();
                let on_role = s.deletes_in_flight[&key];
                s.max_deletes_in_flight = s.max_deletes_in_flight.max(total);
                s.max_deletes_in_flight_per_role = s.max_deletes_in_flight_per_role.max(on_role);
            }
            tokio::time::sleep(delay).await;
            if let Some(n) = lock(&self.inner).deletes_in_flight.get_mut(&key) {
                *n -= 1;
            }
        }
        let mut s = lock(&self.inner);
        s.deletes += 1;
        if let Some(e) = s.fail_next.pop_front() {
            return Err(e);
        }
        Ok(match s.policies.remove(&(role.name().to_owned(), name.to_owned())) {
            Some(_) => Deletion::Deleted,
            None => Deletion::AlreadyGone,
        })
    }
}

/// Builds and pipeline executions as their services would report them; any other job has no
/// run. Counts its reads (one per native start is the budget).
#[derive(Debug, Clone, Default)]
pub struct MemoryNativeRuns {
    inner: Arc<Mutex<NativeRunsState>>,
    faults: Faults,
}

#[derive(Debug, Default)]
struct NativeRunsState {
    runs: HashMap<String, NativeRun>,
    reads: usize,
    fail_next: VecDeque<NativeLookupError>,
}

fn run_key(job: &NativeJob) -> String {
    job.key().to_string()
}

impl MemoryNativeRuns {
    /// Shares `faults` with this port (clones share it too).
    pub fn with_faults(self, faults: &Faults) -> Self {
        Self {
            faults: faults.clone(),
            ..self
        }
    }
    /// The service reports `run` for `job` from now on.
    pub fn set(&self, job: &NativeJob, run: NativeRun) {
        lock(&self.inner).runs.insert(run_key(job), run);
    }
    /// The service forgets `job`'s run (or never had it).
    pub fn remove(&self, job: &NativeJob) {
        lock(&self.inner).runs.remove(&run_key(job));
    }
    pub fn reads(&self) -> usize {
        lock(&self.inner).reads
    }
    pub fn fail_next(&self, e: NativeLookupError) {
        lock(&self.inner).fail_next.push_back(e);
    }
}

impl NativeRuns for MemoryNativeRuns {
    async fn look_up(&self, job: &NativeJob) -> Result<Option<NativeRun>, NativeLookupError> {
        self.faults
            .check(Op::LookUpNativeRun)
            .map_err(NativeLookupError::Transient)?;
        let mut s = lock(&self.inner);
        s.reads += 1;
        if let Some(e) = s.fail_next.pop_front() {
            return Err(e);
        }
        Ok(s.runs.get(&run_key(job)).cloned())
    }
}

/// Grants, tombstones, per-role counters and audit items, with the store's atomicity.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<StoreState>>,
    faults: Faults,
    /// The sweep's leases and cursor (outside the fault plan: crash points are about grants).
    sweep: Arc<crate::sweep::MemorySweepState>,
}

#[derive(Debug, Default)]
struct StoreState {
    grants: BTreeMap<String, Grant>,
    tombstones: BTreeMap<String, DateTime<Utc>>,
    active_per_role: HashMap<String, u32>,
    /// Characters of live grants' documents per role (the quota budget, I9).
    chars_per_role: HashMap<String, usize>,
    audits: BTreeMap<String, AuditRecord>,
    /// (issuer, jti) → the job scope the token was used for.
    token_uses: HashMap<(String, String), String>,
    /// (publisher, minute) → new grants recorded in that window.
    rate_windows: HashMap<(String, DateTime<Utc>), u32>,
    drift: BTreeMap<(String, String), DateTime<Utc>>,
    fail_next: VecDeque<StoreError>,
    /// The next revocation is written, then its answer is lost (the caller sees an error).
    lose_next_revocation_answer: bool,
}

impl StoreState {
    fn fail(&mut self) -> Result<(), StoreError> {
        self.fail_next.pop_front().map_or(Ok(()), Err)
    }

    /// A live grant ended: its cap slot and its characters are the role's again.
    fn release_slot(&mut self, grant: &Grant) {
        if let Some(n) = self.active_per_role.get_mut(grant.role.as_str()) {
            *n = n.saturating_sub(1);
        }
        if let Some(c) = self.chars_per_role.get_mut(grant.role.as_str()) {
            *c = c.saturating_sub(grant.policy_chars);
        }
    }
}

/// The key that ties a job's grants and its tombstone together.
pub fn job_scope(grant: &Grant) -> String {
    grant.job.scope(&grant.account, &grant.source)
}

impl MemoryStore {
    /// Shares `faults` with this port (clones share it too).
    pub fn with_faults(self, faults: &Faults) -> Self {
        Self {
            faults: faults.clone(),
            ..self
        }
    }
    pub fn grants(&self) -> Vec<Grant> {
        lock(&self.inner).grants.values().cloned().collect()
    }
    pub fn audits(&self) -> Vec<AuditRecord> {
        lock(&self.inner).audits.values().cloned().collect()
    }
    pub fn active_on(&self, role: &RoleArn) -> u32 {
        lock(&self.inner)
            .active_per_role
            .get(role.as_str())
            .copied()
            .unwrap_or(0)
    }
    /// Records `grant` as it is, bypassing activation (a test's starting state).
    pub fn insert_grant(&self, grant: Grant) {
        lock(&self.inner).grants.insert(grant.id.as_str().to_owned(), grant);
    }
    pub fn add_tombstone(&self, scope: String, until: DateTime<Utc>) {
        lock(&self.inner).tombstones.insert(scope, until);
    }
    pub fn set_status(&self, id: &str, status: GrantStatus) {
        if let Some(g) = lock(&self.inner).grants.get_mut(id) {
            g.status = status;
        }
    }
    pub fn fail_next(&self, e: StoreError) {
        lock(&self.inner).fail_next.push_back(e);
    }
    /// The next `record_revocation` takes effect but reports a transient error, as when the
    /// connection drops after DynamoDB applied the transaction.
    pub fn lose_next_revocation_answer(&self) {
        lock(&self.inner).lose_next_revocation_answer = true;
    }
}

impl crate::sweep::SweepState for MemoryStore {
    async fn take_lease(
        &self,
        task: crate::sweep::SweepTask,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.sweep.take_lease(task, holder, now, until).await
    }

    async fn release_lease(&self, task: crate::sweep::SweepTask, holder: &str) -> Result<(), StoreError> {
        self.sweep.release_lease(task, holder).await
    }

    async fn drift_cursor(&self) -> Result<Option<String>, StoreError> {
        self.sweep.drift_cursor().await
    }

    async fn save_drift_cursor(&self, last_checked: &str) -> Result<(), StoreError> {
        self.sweep.save_drift_cursor(last_checked).await
    }
}

impl GrantStore for MemoryStore {
    async fn record_activation(
        &self,
        grant: &Grant,
        limits: RoleLimits,
        rate: &RateWindow,
        token: Option<&TokenUse>,
    ) -> Result<Activation, StoreError> {
        self.faults.check(Op::RecordActivation).map_err(StoreError::Transient)?;
        let mut s = lock(&self.inner);
        if let Some(e) = s.fail_next.pop_front() {
            return Err(e);
        }
        if let Some(existing) = s.grants.get(grant.id.as_str()) {
            return Ok(Activation::AlreadyRecorded(Box::new(existing.clone())));
        }
        if s.tombstones.contains_key(&job_scope(grant)) {
            return Ok(Activation::JobFinished);
        }
        let token_key = token.map(|t| (t.issuer.clone(), t.jti.clone()));
        if let (Some(t), Some(key)) = (token, &token_key)
            && s.token_uses.get(key).is_some_and(|scope| scope != &t.job_scope)
        {
            return Ok(Activation::TokenReplayed);
        }
        let active = s.active_per_role.get(grant.role.as_str()).copied().unwrap_or(0);
        if limits.cap.is_some_and(|c| active >= c) {
            return Ok(Activation::ConcurrencyCapReached);
        }
        let chars = s.chars_per_role.get(grant.role.as_str()).copied().unwrap_or(0);
        if chars + grant.policy_chars > limits.policy_budget {
            return Ok(Activation::QuotaExceeded);
        }
        let window = (rate.publisher.clone(), rate.minute);
        let in_window = s.rate_windows.get(&window).copied().unwrap_or(0);
        if in_window >= rate.limit {
            return Ok(Activation::RateLimited);
        }
        s.rate_windows.insert(window, in_window + 1);
        s.active_per_role.insert(grant.role.as_str().to_owned(), active + 1);
        s.chars_per_role
            .insert(grant.role.as_str().to_owned(), chars + grant.policy_chars);
        s.grants.insert(
            grant.id.as_str().to_owned(),
            Grant {
                status: GrantStatus::Pending,
                ..grant.clone()
            },
        );
        if let (Some(t), Some(key)) = (token, token_key) {
            s.token_uses.insert(key, t.job_scope.clone());
        }
        Ok(Activation::Recorded)
    }

    async fn confirm_activation(&self, grant: &Grant, audit: &AuditRecord) -> Result<Confirmation, StoreError> {
        self.faults
            .check(Op::ConfirmActivation)
            .map_err(StoreError::Transient)?;
        let mut s = lock(&self.inner);
        s.fail()?;
        let live = s.grants.get(grant.id.as_str()).is_some_and(|g| g.status.is_live());
        if !live {
            return Ok(Confirmation::Ended);
        }
        if let Some(stored) = s.audits.get(&audit.audit_id) {
            return Ok(Confirmation::AlreadyConfirmed(Some(Box::new(stored.clone()))));
        }
        if let Some(g) = s.grants.get_mut(grant.id.as_str()) {
            g.status = GrantStatus::Active;
        }
        s.audits.insert(audit.audit_id.clone(), audit.clone());
        Ok(Confirmation::Confirmed)
    }

    async fn record_failure(&self, grant: &Grant, audit: &AuditRecord) -> Result<bool, StoreError> {
        self.faults.check(Op::RecordFailure).map_err(StoreError::Transient)?;
        let mut s = lock(&self.inner);
        s.fail()?;
        match s.grants.get_mut(grant.id.as_str()) {
            Some(g) if g.status == GrantStatus::Pending => g.status = GrantStatus::Failed,
            _ => return Ok(false),
        }
        s.release_slot(grant);
        s.audits.entry(audit.audit_id.clone()).or_insert_with(|| audit.clone());
        Ok(true)
    }

    async fn record_extension(
        &self,
        current: &Grant,
        extended: &Grant,
        audit: &AuditRecord,
    ) -> Result<Extension, StoreError> {
        self.faults.check(Op::RecordExtension).map_err(StoreError::Transient)?;
        let mut s = lock(&self.inner);
        s.fail()?;
        let stored = s.grants.get(current.id.as_str()).cloned();
        if s.audits.contains_key(&audit.audit_id) {
            return Ok(match stored {
                Some(g) => Extension::AlreadyRecorded(Box::new(g)),
                None => Extension::NotActive,
            });
        }
        match stored {
            Some(g) if g.status == GrantStatus::Active && g.expires_at == current.expires_at => {
                s.grants.insert(extended.id.as_str().to_owned(), extended.clone());
                s.audits.insert(audit.audit_id.clone(), audit.clone());
                Ok(Extension::Recorded)
            }
            _ => Ok(Extension::NotActive),
        }
    }

    async fn record_audit(&self, audit: &AuditRecord) -> Result<AuditWrite, StoreError> {
        self.faults.check(Op::RecordAudit).map_err(StoreError::Transient)?;
        let mut s = lock(&self.inner);
        s.fail()?;
        if let Some(stored) = s.audits.get(&audit.audit_id) {
            return Ok(AuditWrite::AlreadyRecorded(Box::new(stored.clone())));
        }
        s.audits.insert(audit.audit_id.clone(), audit.clone());
        Ok(AuditWrite::Recorded)
    }

    async fn recorded_audit(&self, audit_id: &str) -> Result<Option<AuditRecord>, StoreError> {
        self.faults.check(Op::GetAudit).map_err(StoreError::Transient)?;
        let mut s = lock(&self.inner);
        s.fail()?;
        Ok(s.audits.get(audit_id).cloned())
    }

    async fn finish_job(
        &self,
        account: &AccountId,
        source: &str,
        job: &JobKey,
        _finished_at: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<Grant>, StoreError> {
        self.faults.check(Op::FinishJob).map_err(StoreError::Transient)?;
        let mut s = lock(&self.inner);
        s.fail()?;
        let scope = job.scope(account, source);
        s.tombstones.insert(scope.clone(), until);
        Ok(s.grants.values().filter(|g| job_scope(g) == scope).cloned().collect())
    }

    async fn record_revocation(
        &self,
        grant: &Grant,
        audit: &AuditRecord,
        state: RecordState,
    ) -> Result<Revocation, StoreError> {
        self.faults.check(Op::RecordRevocation).map_err(StoreError::Transient)?;
        let mut s = lock(&self.inner);
        s.fail()?;
        let still_active = s.grants.get(grant.id.as_str()).is_some_and(|g| g.status.is_live());
        if (state == RecordState::Present && !still_active) || s.audits.contains_key(&audit.audit_id) {
            let stored = s.audits.get(&audit.audit_id).cloned().map(Box::new);
            return Ok(Revocation::AlreadyRevoked(stored));
        }
        match state {
            RecordState::Present => {
                if let Some(g) = s.grants.get_mut(grant.id.as_str()) {
                    g.status = GrantStatus::Revoked;
                }
            }
            RecordState::DeletedByTtl => {
                s.grants.remove(grant.id.as_str());
            }
        }
        s.release_slot(grant);
        s.audits.insert(audit.audit_id.clone(), audit.clone());
        if std::mem::take(&mut s.lose_next_revocation_answer) {
            return Err(StoreError::Transient(
                "the answer was lost after the write was applied".into(),
            ));
        }
        Ok(Revocation::Recorded)
    }

    async fn expired_grants(
        &self,
        now: DateTime<Utc>,
        after: Option<&Grant>,
        limit: u32,
    ) -> Result<Vec<Grant>, StoreError> {
        self.faults.check(Op::ExpiredGrants).map_err(StoreError::Transient)?;
        let mut s = lock(&self.inner);
        s.fail()?;
        let mut expired: Vec<Grant> = s
            .grants
            .values()
            .filter(|g| g.status.is_live() && g.expires_at <= now)
            .filter(|g| after.is_none_or(|a| (g.expires_at, &g.id) > (a.expires_at, &a.id)))
            .cloned()
            .collect();
        expired.sort_by(|a, b| (a.expires_at, &a.id).cmp(&(b.expires_at, &b.id)));
        expired.truncate(limit as usize);
        Ok(expired)
    }

    async fn grant(&self, id: &GrantId) -> Result<Option<Grant>, StoreError> {
        self.faults.check(Op::GetGrant).map_err(StoreError::Transient)?;
        let mut s = lock(&self.inner);
        s.fail()?;
        Ok(s.grants.get(id.as_str()).cloned())
    }

    async fn drift_seen_since(
        &self,
        role: &RoleArn,
        policy_name: &str,
        now: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        self.faults.check(Op::DriftSeenSince).map_err(StoreError::Transient)?;
        let mut s = lock(&self.inner);
        s.fail()?;
        Ok(*s
            .drift
            .entry((role.as_str().to_owned(), policy_name.to_owned()))
            .or_insert(now))
    }

    async fn clear_drift(&self, role: &RoleArn, policy_name: &str) -> Result<(), StoreError> {
        self.faults.check(Op::ClearDrift).map_err(StoreError::Transient)?;
        let mut s = lock(&self.inner);
        s.fail()?;
        s.drift.remove(&(role.as_str().to_owned(), policy_name.to_owned()));
        Ok(())
    }
}

/// Published audit events, in order.
#[derive(Debug, Clone, Default)]
pub struct MemoryAuditSink {
    inner: Arc<Mutex<(Vec<AuditRecord>, VecDeque<SinkError>)>>,
    faults: Faults,
}

impl MemoryAuditSink {
    /// Shares `faults` with this port (clones share it too).
    pub fn with_faults(self, faults: &Faults) -> Self {
        Self {
            faults: faults.clone(),
            ..self
        }
    }
    pub fn published(&self) -> Vec<AuditRecord> {
        lock(&self.inner).0.clone()
    }
    pub fn fail_next(&self, e: SinkError) {
        lock(&self.inner).1.push_back(e);
    }
}

impl AuditSink for MemoryAuditSink {
    async fn publish(&self, audit: &AuditRecord) -> Result<(), SinkError> {
        self.faults.check(Op::PutEvents).map_err(SinkError::Transient)?;
        let mut s = lock(&self.inner);
        if let Some(e) = s.1.pop_front() {
            return Err(e);
        }
        s.0.push(audit.clone());
        Ok(())
    }
}
