//! Prints, as JSON, every name template.yaml must agree with, straight from the code, for the
//! template parity test (infra/checks/test_template_parity.py). Also checks values the template
//! passes in: the sweep settings in the environment (`LATCH_DRIFT_GRACE`,
//! `LATCH_SWEEP_CONCURRENCY`) are parsed by the sweep's own parser, and the policy file given as
//! the first argument is loaded by the real loader.
//!
//! `cargo run -q -p sweep --example template_constants -- infra/policies.yaml`

use latch_aws::config::{ENV_BOUNDARY_ARN, ENV_BUS, ENV_DEPLOYMENT, ENV_POLICY_PATH, ENV_TABLE};
use latch_aws::items;
use latch_core::audit::{AUDIT_SOURCE, Decision};
use latch_core::event::{DETAIL_TYPE_EXTEND, DETAIL_TYPE_FINISHED, DETAIL_TYPE_STARTED};
use latch_core::metrics::{Metric, NAMESPACE};
use latch_core::policy::Policy;
use serde_json::json;

fn main() {
    let defaults = latch_aws::Config::from_lookup(|_| None).expect("defaults");
    let settings = match sweep::settings_from(|n| std::env::var(n).ok()) {
        Ok(s) => json!({
            "ok": true,
            "drift_grace_secs": s.drift_grace.num_seconds(),
            "concurrency": s.concurrency,
            "drift_iam_per_second": s.drift_iam_per_second,
        }),
        Err(e) => json!({ "ok": false, "error": e.to_string() }),
    };
    let policy = std::env::args()
        .nth(1)
        .map(|path| match Policy::load_path(std::path::Path::new(&path)) {
            Ok(p) => json!({ "ok": true, "elevatable_path": p.elevatable_path }),
            Err(e) => json!({ "ok": false, "error": e.to_string() }),
        });
    let out = json!({
        "env": {
            "table": ENV_TABLE,
            "bus": ENV_BUS,
            "policy_path": ENV_POLICY_PATH,
            "boundary_arn": ENV_BOUNDARY_ARN,
            "deployment": ENV_DEPLOYMENT,
            "drift_grace": sweep::ENV_DRIFT_GRACE,
            "sweep_concurrency": sweep::ENV_SWEEP_CONCURRENCY,
            "drift_iam_rate": sweep::ENV_DRIFT_IAM_RATE,
        },
        "schedule_detail_types": {
            "sweep": sweep::DETAIL_TYPE_SWEEP,
            "drift": sweep::DETAIL_TYPE_DRIFT,
        },
        "revoke": {
            "record_concurrency": revoke::RECORD_CONCURRENCY,
            "deadline_margin_secs": revoke::DEADLINE_MARGIN.as_secs(),
        },
        "sweep_deadline_margin_secs": sweep::DEADLINE_MARGIN.as_secs(),
        "metrics": {
            "namespace": NAMESPACE,
            "catalogue": Metric::ALL.iter().map(|m| json!({
                "name": m.name(),
                "unit": m.unit().as_str(),
                "dimension": m.dimension(),
            })).collect::<Vec<_>>(),
        },
        "defaults": {
            "table": defaults.table,
            "bus": defaults.bus,
            "policy_path": defaults.policy_path,
        },
        "table": {
            "pk": items::PK,
            "sk": items::SK,
            "ttl": items::TTL,
            "expiry_index": items::EXPIRY_INDEX,
            "expiry_bucket": items::EXPIRY_BUCKET,
            "expires_at_epoch": items::EXPIRES_AT_EPOCH,
            "record_type": items::RECORD_TYPE,
            "status": items::STATUS,
            "audit_pk_prefix": items::audit_pk(""),
        },
        "pipeline_detail_types": [DETAIL_TYPE_STARTED, DETAIL_TYPE_FINISHED, DETAIL_TYPE_EXTEND],
        "local_pipeline_pattern": latch_aws::provision::pipeline_events_pattern(),
        "live_statuses": [items::STATUS_ACTIVE, items::STATUS_PENDING],
        "audit_source": AUDIT_SOURCE,
        "probe": {
            "action": latch_core::probe::PROBE_ACTION,
            "bus_prefix": latch_core::probe::PROBE_BUS_PREFIX,
        },
        "audit_detail_types": {
            "activated": Decision::Activated.detail_type(),
            "denied": Decision::Denied.detail_type(),
            "revoked": Decision::Revoked.detail_type(),
            "revoke_failed": Decision::RevokeFailed.detail_type(),
            "drift_repaired": Decision::DriftRepaired.detail_type(),
            "extended": Decision::Extended.detail_type(),
        },
        "sweep_settings": settings,
        "policy_file": policy,
    });
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}
