-- How grants ended, per role: taken away when the job finished, or at expiry (by the sweep, or
-- on the TTL stream). `not_revoked` counts activations without a revocation in the export:
-- grants still active at the export's time, or whose revocation failed and is still pending
-- (see 05_revoke_failures.sql). Each grant has exactly one activation and at most one revocation.
SELECT
  role_arn,
  sum(CASE WHEN decision = 'activated' THEN 1 ELSE 0 END) AS grants,
  sum(CASE WHEN decision = 'revoked' AND reason = 'job_finished' THEN 1 ELSE 0 END) AS ended_by_finish,
  sum(CASE WHEN decision = 'revoked' AND reason IN ('expired_sweep', 'expired_ttl') THEN 1 ELSE 0 END) AS ended_by_expiry,
  sum(CASE WHEN decision = 'revoked' AND reason = 'expired_sweep' THEN 1 ELSE 0 END) AS expired_sweep,
  sum(CASE WHEN decision = 'revoked' AND reason = 'expired_ttl' THEN 1 ELSE 0 END) AS expired_ttl,
  sum(CASE WHEN decision = 'activated' THEN 1 ELSE 0 END)
    - sum(CASE WHEN decision = 'revoked' THEN 1 ELSE 0 END) AS not_revoked
FROM latch_audit
WHERE decision IN ('activated', 'revoked')
GROUP BY role_arn
ORDER BY role_arn;
