//! Conflicts are transient: retried in process, briefly, before anyone else hears of them.
//!
//! IAM answers `ConcurrentModification` (HTTP 409) to a write on a role another write is
//! changing; DynamoDB cancels a transaction touching an item another transaction holds
//! (`TransactionConflict` among the cancellation reasons) and answers a single write on such an
//! item with `TransactionConflictException`. Nothing was applied in either case, the SDK's
//! retry strategy retries neither, and the other writer is done within milliseconds: the right
//! answer is to try again shortly, not to fail the invocation into Lambda's minute-scale retries
//! or to audit a revoke as failed.
//!
//! [`ConflictRetry::run`] is the one loop every such call site goes through: exponential backoff
//! (base × 2ⁿ, capped) with full jitter (uniform in `[0, ceiling)`, from `fastrand`, the
//! generator the SDK itself already links), and no new attempt once the next one would start
//! past the budget. Then the last conflict is returned as it stands and classified transient
//! by the adapter: Lambda (or the next sweep) retries.
//!
//! The budget (5 s) bounds the waiting, not the attempts themselves (each has the SDK's 10 s
//! operation timeout); a grant makes three conflict-prone writes, so its worst case stays well
//! inside the functions' 30 s timeout only under sustained contention, which then ends as an
//! ordinary transient error.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, warn};

/// Backoff for conflicting writes: see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConflictRetry {
    /// Ceiling of the first wait.
    pub base: Duration,
    /// Ceiling of any one wait.
    pub cap: Duration,
    /// No attempt starts later than this after the first one.
    pub budget: Duration,
}

impl Default for ConflictRetry {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(25),
            cap: Duration::from_secs(1),
            budget: Duration::from_secs(5),
        }
    }
}

impl ConflictRetry {
    /// One attempt, no retry: a conflict is returned at once.
    pub const fn never() -> Self {
        Self {
            base: Duration::ZERO,
            cap: Duration::ZERO,
            budget: Duration::ZERO,
        }
    }

    /// The ceiling of the wait before retry `n` (0: the first retry): `min(cap, base · 2ⁿ)`.
    pub fn ceiling(&self, n: u32) -> Duration {
        self.base.saturating_mul(1u32 << n.min(20)).min(self.cap)
    }

    /// A wait before retry `n`: uniform in `[0, ceiling(n))` (full jitter, so writers that
    /// conflicted once do not meet again on the same beat).
    fn wait(&self, n: u32) -> Duration {
        self.ceiling(n).mul_f64(fastrand::f64())
    }

    /// Calls `call` until it succeeds or fails with something other than a conflict
    /// (`is_conflict`), or until the budget would be passed; returns the last result.
    pub(crate) async fn run<T, E, F, Fut>(
        &self,
        what: &str,
        is_conflict: impl Fn(&E) -> bool,
        mut call: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let deadline = Instant::now() + self.budget;
        let mut retry = 0;
        loop {
            let result = call().await;
            match &result {
                Err(e) if is_conflict(e) => {
                    let wait = self.wait(retry);
                    if Instant::now() + wait > deadline {
                        if self.budget > Duration::ZERO {
                            warn!(
                                call = what,
                                retries = retry,
                                "still conflicting when the retry budget ran out"
                            );
                        }
                        return result;
                    }
                    debug!(
                        call = what,
                        retry,
                        wait_ms = wait.as_millis() as u64,
                        "conflict: retrying"
                    );
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
                _ => return result,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn ceilings_double_from_the_base_up_to_the_cap() {
        let r = ConflictRetry::default();
        let ms: Vec<u128> = (0..8).map(|n| r.ceiling(n).as_millis()).collect();
        assert_eq!(ms, [25, 50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(r.ceiling(u32::MAX), Duration::from_secs(1));
        for n in 0..8 {
            let w = r.wait(n);
            assert!(w < r.ceiling(n), "{w:?}");
        }
    }

    #[tokio::test]
    async fn conflicts_are_retried_until_success() {
        let calls = Cell::new(0);
        let out: Result<u32, &str> = ConflictRetry::default()
            .run(
                "test",
                |e| *e == "conflict",
                || {
                    calls.set(calls.get() + 1);
                    let n = calls.get();
                    async move { if n < 3 { Err("conflict") } else { Ok(n) } }
                },
            )
            .await;
        assert_eq!(out, Ok(3));
    }

    #[tokio::test]
    async fn other_errors_are_not_retried() {
        let calls = Cell::new(0);
        let out: Result<(), &str> = ConflictRetry::default()
            .run(
                "test",
                |e| *e == "conflict",
                || {
                    calls.set(calls.get() + 1);
                    async { Err("invalid") }
                },
            )
            .await;
        assert_eq!((out, calls.get()), (Err("invalid"), 1));
    }

    #[tokio::test]
    async fn a_conflict_that_lasts_ends_within_the_budget() {
        let retry = ConflictRetry {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(20),
            budget: Duration::from_millis(200),
        };
        let start = Instant::now();
        let calls = Cell::new(0);
        let out: Result<(), &str> = retry
            .run(
                "test",
                |_| true,
                || {
                    calls.set(calls.get() + 1);
                    async { Err("conflict") }
                },
            )
            .await;
        assert_eq!(out, Err("conflict"));
        // No attempt started past the budget (the last one returns at once here).
        assert!(start.elapsed() <= Duration::from_millis(250), "{:?}", start.elapsed());
        // 1 ms … 20 ms ceilings, full jitter, 200 ms: several attempts, far from a busy loop.
        assert!((5..200).contains(&calls.get()), "{} attempts", calls.get());
        let calls = Cell::new(0);
        let _ = ConflictRetry::never()
            .run(
                "test",
                |_: &&str| true,
                || {
                    calls.set(calls.get() + 1);
                    async { Err::<(), _>("conflict") }
                },
            )
            .await;
        assert_eq!(calls.get(), 1);
    }
}
