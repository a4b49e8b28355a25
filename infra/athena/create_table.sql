-- Latch audit history in Athena: a table over one DynamoDB export (ExportTableToPointInTime,
-- format DYNAMODB_JSON). Each data file under data/ is gzip'd JSON lines, one item per line:
--   {"Item": {"decision": {"S": "activated"}, "granted_at_epoch": {"N": "1772445601"}, ...}}
-- so every attribute is a struct keyed by its DynamoDB type: S (string), N (number, as a
-- string), L (list), M (map). The table keeps that shape; the view latch_audit (audit_view.sql) unwraps it.
--
-- Point LOCATION at the export's data folder (the manifest-summary.json of the export says
-- which one: AWSDynamoDB/<export-id>/data/). Athena reads .gz files as gzip by their suffix.
-- Items of other record types (grant, job, role_counter, drift_suspect) share the files; they
-- read as rows whose audit fields are NULL, and the view drops them (record_type = 'audit').
-- Names are back-quoted because some (commit) are reserved in Athena DDL.
--
-- Kept in step with events/schemas/audit-record.schema.json by infra/athena/tests.
CREATE EXTERNAL TABLE IF NOT EXISTS latch_export (
  `Item` struct<
    `pk`: struct<`S`: string>,
    `sk`: struct<`S`: string>,
    `record_type`: struct<`S`: string>,
    `audit_id`: struct<`S`: string>,
    `decision`: struct<`S`: string>,
    `reason`: struct<`S`: string>,
    `detail`: struct<`S`: string>,
    `rule`: struct<`S`: string>,
    `grant_id`: struct<`S`: string>,
    `policy_name`: struct<`S`: string>,
    `role_arn`: struct<`S`: string>,
    `permission_set`: struct<`S`: string>,
    `actions`: struct<`L`: array<struct<`S`: string>>>,
    `source`: struct<`S`: string>,
    `account`: struct<`S`: string>,
    `region`: struct<`S`: string>,
    `event_id`: struct<`S`: string>,
    `identity`: struct<`S`: string>,
    `issuer`: struct<`S`: string>,
    `principal`: struct<`S`: string>,
    `verified_claims`: struct<`M`: map<string, struct<`S`: string>>>,
    `verified_fields`: struct<`L`: array<struct<`S`: string>>>,
    `claimed_fields`: struct<`L`: array<struct<`S`: string>>>,
    `session`: struct<`S`: string>,
    `pipeline`: struct<`S`: string>,
    `run_id`: struct<`S`: string>,
    `job`: struct<`S`: string>,
    `attempt`: struct<`N`: string>,
    `actor`: struct<`S`: string>,
    `commit`: struct<`S`: string>,
    `ref`: struct<`S`: string>,
    `ticket`: struct<`S`: string>,
    `environment`: struct<`S`: string>,
    `justification`: struct<`S`: string>,
    `requested_duration_secs`: struct<`N`: string>,
    `requested_at`: struct<`S`: string>,
    `requested_at_epoch`: struct<`N`: string>,
    `granted_at`: struct<`S`: string>,
    `granted_at_epoch`: struct<`N`: string>,
    `expires_at`: struct<`S`: string>,
    `expires_at_epoch`: struct<`N`: string>,
    `revoked_at`: struct<`S`: string>,
    `revoked_at_epoch`: struct<`N`: string>,
    `policy_sha256`: struct<`S`: string>,
    `policy_document`: struct<`S`: string>,
    `policy_file_sha256`: struct<`S`: string>,
    `policy_file_label`: struct<`S`: string>,
    `deleted_document`: struct<`S`: string>,
    `finished_by`: struct<`S`: string>,
    `recorded_at`: struct<`S`: string>,
    `recorded_at_epoch`: struct<`N`: string>
  >
)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://YOUR-EXPORT-BUCKET/YOUR-PREFIX/AWSDynamoDB/YOUR-EXPORT-ID/data/'
TBLPROPERTIES ('has_encrypted_data' = 'false');
