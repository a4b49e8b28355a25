-- The archived audit records, one row per decision, with the columns of latch_audit
-- (audit_view.sql: the record's fields, in the schema's order) plus `date`, the partition.
-- The archive is written at least once, so a record may be stored twice: this view keeps one
-- row per audit_id (ids are deterministic per decision, and a repeat is the same record).
-- Filter on `date` to read only the days you need (partition projection).
CREATE OR REPLACE VIEW latch_archive_audit AS
SELECT
  a.Item.audit_id.S AS audit_id,
  a.Item.decision.S AS decision,
  a.Item.reason.S AS reason,
  a.Item.detail.S AS detail,
  a.Item.rule.S AS rule,
  a.Item.grant_id.S AS grant_id,
  a.Item.policy_name.S AS policy_name,
  a.Item.role_arn.S AS role_arn,
  a.Item.permission_set.S AS permission_set,
  transform(a.Item.actions.L, a -> a.S) AS actions,
  a.Item.source.S AS source,
  a.Item.account.S AS account,
  a.Item.region.S AS region,
  a.Item.event_id.S AS event_id,
  a.Item.identity.S AS identity,
  a.Item.issuer.S AS issuer,
  a.Item.principal.S AS principal,
  transform_values(a.Item.verified_claims.M, (k, v) -> v.S) AS verified_claims,
  transform(a.Item.verified_fields.L, f -> f.S) AS verified_fields,
  transform(a.Item.claimed_fields.L, f -> f.S) AS claimed_fields,
  a.Item.session.S AS session,
  a.Item.pipeline.S AS pipeline,
  a.Item.run_id.S AS run_id,
  a.Item.job.S AS job,
  CAST(a.Item.attempt.N AS bigint) AS attempt,
  a.Item.actor.S AS actor,
  a.Item."commit".S AS "commit",
  a.Item."ref".S AS "ref",
  a.Item.ticket.S AS ticket,
  a.Item.environment.S AS environment,
  a.Item.justification.S AS justification,
  CAST(a.Item.requested_duration_secs.N AS bigint) AS requested_duration_secs,
  a.Item.requested_at.S AS requested_at,
  CAST(a.Item.requested_at_epoch.N AS bigint) AS requested_at_epoch,
  a.Item.granted_at.S AS granted_at,
  CAST(a.Item.granted_at_epoch.N AS bigint) AS granted_at_epoch,
  a.Item.expires_at.S AS expires_at,
  CAST(a.Item.expires_at_epoch.N AS bigint) AS expires_at_epoch,
  a.Item.revoked_at.S AS revoked_at,
  CAST(a.Item.revoked_at_epoch.N AS bigint) AS revoked_at_epoch,
  a.Item.policy_sha256.S AS policy_sha256,
  a.Item.policy_document.S AS policy_document,
  a.Item.policy_file_sha256.S AS policy_file_sha256,
  a.Item.policy_file_label.S AS policy_file_label,
  a.Item.deleted_document.S AS deleted_document,
  a.Item.finished_by.S AS finished_by,
  a.Item.recorded_at.S AS recorded_at,
  CAST(a.Item.recorded_at_epoch.N AS bigint) AS recorded_at_epoch,
  a."date" AS "date"
FROM (
  SELECT t.*, row_number() OVER (PARTITION BY t.Item.audit_id.S ORDER BY t."date") AS copy_no
  FROM latch_archive t
  WHERE t.Item.record_type.S = 'audit'
) a
WHERE a.copy_no = 1;
