-- Latch's append-only audit archive in Athena: a table over the archive bucket's audit/ folder,
-- which the template's Firehose stream fills from the table's stream (docs/auditors.md).
-- Each object under audit/date=YYYY-MM-DD/ is JSON lines, one audit item per line, in the very
-- shape of an export's data lines:
--   {"Item": {"decision": {"S": "activated"}, "granted_at_epoch": {"N": "1772445601"}, ...}}
-- so the Item column is the export table's (create_table.sql; a test keeps them equal) and the
-- view latch_archive_audit (archive_view.sql) unwraps it the same way.
--
-- Partition projection: Athena computes the date= partitions from the properties below; no
-- crawler, no MSCK REPAIR, no partition to add as days go by. Filter on `date` (a string,
-- 'YYYY-MM-DD', the decision's UTC day) and Athena reads only those days' objects. Set both
-- s3:// locations to your archive bucket (the stack's ArchiveBucket output), and the range's
-- first day to the day the archive started.
CREATE EXTERNAL TABLE IF NOT EXISTS latch_archive (
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
PARTITIONED BY (`date` string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
LOCATION 's3://YOUR-ARCHIVE-BUCKET/audit/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.date.type' = 'date',
  'projection.date.format' = 'yyyy-MM-dd',
  'projection.date.range' = '2026-01-01,NOW',
  'projection.date.interval' = '1',
  'projection.date.interval.unit' = 'DAYS',
  'storage.location.template' = 's3://YOUR-ARCHIVE-BUCKET/audit/date=${date}/',
  'has_encrypted_data' = 'false'
);
