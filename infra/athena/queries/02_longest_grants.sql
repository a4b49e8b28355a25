-- The longest grants actually held: from activation to the moment the policy was taken away
-- (revoked_at), with who asked, for what, and how the grant ended. A grant still active at the
-- export's time has no revoked record yet and is not listed.
SELECT
  revoked_at_epoch - granted_at_epoch AS held_secs,
  role_arn,
  permission_set,
  pipeline,
  run_id,
  job,
  actor,
  granted_at,
  revoked_at,
  reason AS ended_by,
  grant_id
FROM latch_audit
WHERE decision = 'revoked'
ORDER BY held_secs DESC, grant_id
LIMIT 20;
