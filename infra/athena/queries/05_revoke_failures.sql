-- Revoke failures: IAM refused to delete a grant's policy. Access still ended at expires_at,
-- because every policy Latch writes stops matching then (its aws:CurrentTime condition); the
-- sweep retries the delete. The join shows whether and how the grant was finally revoked
-- (NULL: not yet, as of the export).
SELECT
  f.recorded_at AS failed_at,
  f.role_arn,
  f.pipeline,
  f.run_id,
  f.job,
  f.reason AS revoke_path,
  f.detail AS error,
  f.expires_at AS policy_self_expires_at,
  r.revoked_at AS finally_revoked_at,
  r.reason AS finally_ended_by,
  f.grant_id
FROM latch_audit f
LEFT JOIN latch_audit r
  ON r.grant_id = f.grant_id AND r.decision = 'revoked'
WHERE f.decision = 'revoke_failed'
ORDER BY f.recorded_at DESC, f.grant_id;
