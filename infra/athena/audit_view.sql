-- The audit records, one row per decision, with plain columns named exactly as in
-- events/schemas/audit-record.schema.json. Numbers become bigint; actions and verified_fields
-- arrays of strings; verified_claims a map of strings.
-- Times come as ISO 8601 UTC strings (they sort and compare as text) and as *_epoch seconds
-- (for arithmetic); from_unixtime(granted_at_epoch) gives a timestamp where one is needed.
-- Every query in queries/ reads this view.
CREATE OR REPLACE VIEW latch_audit AS
SELECT
  Item.audit_id.S AS audit_id,
  Item.decision.S AS decision,
  Item.reason.S AS reason,
  Item.detail.S AS detail,
  Item.rule.S AS rule,
  Item.grant_id.S AS grant_id,
  Item.policy_name.S AS policy_name,
  Item.role_arn.S AS role_arn,
  Item.permission_set.S AS permission_set,
  transform(Item.actions.L, a -> a.S) AS actions,
  Item.source.S AS source,
  Item.account.S AS account,
  Item.region.S AS region,
  Item.event_id.S AS event_id,
  Item.identity.S AS identity,
  Item.issuer.S AS issuer,
  Item.principal.S AS principal,
  transform_values(Item.verified_claims.M, (k, v) -> v.S) AS verified_claims,
  transform(Item.verified_fields.L, f -> f.S) AS verified_fields,
  transform(Item.claimed_fields.L, f -> f.S) AS claimed_fields,
  Item.session.S AS session,
  Item.pipeline.S AS pipeline,
  Item.run_id.S AS run_id,
  Item.job.S AS job,
  CAST(Item.attempt.N AS bigint) AS attempt,
  Item.actor.S AS actor,
  Item."commit".S AS "commit",
  Item."ref".S AS "ref",
  Item.ticket.S AS ticket,
  Item.environment.S AS environment,
  Item.justification.S AS justification,
  CAST(Item.requested_duration_secs.N AS bigint) AS requested_duration_secs,
  Item.requested_at.S AS requested_at,
  CAST(Item.requested_at_epoch.N AS bigint) AS requested_at_epoch,
  Item.granted_at.S AS granted_at,
  CAST(Item.granted_at_epoch.N AS bigint) AS granted_at_epoch,
  Item.expires_at.S AS expires_at,
  CAST(Item.expires_at_epoch.N AS bigint) AS expires_at_epoch,
  Item.revoked_at.S AS revoked_at,
  CAST(Item.revoked_at_epoch.N AS bigint) AS revoked_at_epoch,
  Item.policy_sha256.S AS policy_sha256,
  Item.policy_document.S AS policy_document,
  Item.policy_file_sha256.S AS policy_file_sha256,
  Item.policy_file_label.S AS policy_file_label,
  Item.deleted_document.S AS deleted_document,
  Item.finished_by.S AS finished_by,
  Item.recorded_at.S AS recorded_at,
  CAST(Item.recorded_at_epoch.N AS bigint) AS recorded_at_epoch
FROM latch_export
WHERE Item.record_type.S = 'audit';
