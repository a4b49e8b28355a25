//! The propagation probe: how a job learns that IAM already applies its grant.
//!
//! IAM accepts a document at once but takes seconds to apply it everywhere, and how long varies.
//! Every grant document therefore carries one more statement, [`PROBE_SID`], that allows a
//! harmless read, [`PROBE_ACTION`] on an event bus that never exists and whose name holds the
//! grant id, under the same expiry (and session) conditions as the grant's own statements. With
//! the elevated role's credentials, the client asks for that bus: `AccessDenied` means IAM does
//! not apply the grant there yet, `ResourceNotFound` means it does (it got past authorisation).
//! The probe reads nothing, writes nothing, names one grant only, and expires with it; the
//! deployment's boundary admits exactly this action on exactly these names.

use crate::model::{GrantId, RoleArn};

/// The statement id of the probe in every grant document (sets may not use it).
pub const PROBE_SID: &str = "LatchPropagationProbe";
/// A read-only call whose answer tells authorised (not found) from not authorised.
pub const PROBE_ACTION: &str = "events:DescribeEventBus";
/// Probe buses are named `latch-probe-<grant id>`; the boundary admits this prefix only.
pub const PROBE_BUS_PREFIX: &str = "latch-probe-";

/// The event bus name the probe asks for: never created, unique to the grant.
pub fn bus_name(grant: &GrantId) -> String {
    format!("{PROBE_BUS_PREFIX}{grant}")
}

/// The probe statement's resource: the probe bus in any region of the role's own account.
pub fn resource(grant: &GrantId, role: &RoleArn) -> String {
    format!(
        "arn:{}:events:*:{}:event-bus/{}",
        role.partition(),
        role.account().as_str(),
        bus_name(grant)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_names_one_grant_in_the_roles_own_account_and_partition() {
        // GIVEN a grant on a role in the China partition
        let grant = GrantId::parse("0123456789abcdef0123456789abcdef").unwrap();
        let role = RoleArn::parse("arn:aws-cn:iam::210987654321:role/latch/deployer").unwrap();
        // WHEN its probe is named
        let arn = resource(&grant, &role);
        // THEN the bus is the grant's, in the role's account and partition, any region
        assert_eq!(
            arn,
            "arn:aws-cn:events:*:210987654321:event-bus/latch-probe-0123456789abcdef0123456789abcdef"
        );
        // AND the name is a valid event bus name (letters, digits, - _ . /; at most 256)
        let name = bus_name(&grant);
        assert!(name.len() <= 256 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)));
    }
}
