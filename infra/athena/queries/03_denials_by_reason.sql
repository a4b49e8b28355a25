-- Denials by reason code (no_matching_rule, duration_over_max, malformed_event, ...): what
-- pipelines asked for and did not get. `detail` on each record says which field or limit.
SELECT
  reason,
  count(*) AS denials,
  count(DISTINCT pipeline) AS pipelines,
  count(DISTINCT role_arn) AS roles,
  min(recorded_at) AS first_seen,
  max(recorded_at) AS last_seen
FROM latch_audit
WHERE decision = 'denied'
GROUP BY reason
ORDER BY denials DESC, reason;
