-- Grants per role in a period: who held elevated access on which role, how often and for how
-- long. A grant counts in the period its activation falls in (granted_at). Edit the two bounds;
-- ISO 8601 UTC strings compare correctly as text.
SELECT
  role_arn,
  count(*) AS grants,
  count(DISTINCT pipeline) AS pipelines,
  count(DISTINCT actor) AS actors,
  sum(expires_at_epoch - granted_at_epoch) AS granted_secs,
  min(granted_at) AS first_granted_at,
  max(granted_at) AS last_granted_at
FROM latch_audit
WHERE decision = 'activated'
  AND granted_at >= '2026-03-01T00:00:00Z'
  AND granted_at < '2026-03-08T00:00:00Z'
GROUP BY role_arn
ORDER BY grants DESC, role_arn;
