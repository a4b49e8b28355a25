//! [`IamWriter`] on IAM: PutRolePolicy and DeleteRolePolicy, and role resolution
//! ([`IamAdapter::resolve_role`]: GetRole, then ListRolePolicies and GetRolePolicy for the role's
//! own policies' sizes), cached per role for [`ROLE_CACHE_TTL`] in the warm container and counted
//! apart ([`IamAdapter::resolutions`]). [`IamInventory`] (ListRoles, ListRolePolicies, GetRolePolicy) is the
//! sweep's drift repair only.
//!
//! Both writes go through [`ConflictRetry`]: a `ConcurrentModification` (another write on the
//! same role in flight) is retried in process, and one that outlasts the budget is
//! [`IamError::Transient`], never a refusal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_iam::Client;
use aws_sdk_iam::error::ProvideErrorMetadata;
use latch_core::model::{Deployment, RoleArn};
use latch_core::policy::PolicyDocument;
use latch_core::ports::{Deletion, IamError, IamInventory, IamWriter, ResolvedRole};

use crate::conflicts::ConflictRetry;
use crate::errors::{describe, is_concurrent_modification, is_transient};

/// How long a resolved role is trusted: a role re-created under the same name (a new RoleId,
/// perhaps without the boundary) is seen within this.
pub const ROLE_CACHE_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct IamAdapter {
    client: Client,
    /// The permissions boundary every elevatable role must carry; `None`: not checked.
    required_boundary: Option<String>,
    /// Resolved roles by lowercased name (IAM's names are case-insensitive).
    roles: Arc<Mutex<HashMap<String, (Instant, ResolvedRole)>>>,
    resolutions: Arc<AtomicU64>,
    conflicts: ConflictRetry,
    /// Names this deployment's policies: the ones the role counter already tracks.
    deployment: Deployment,
}

impl IamAdapter {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            required_boundary: None,
            roles: Arc::default(),
            resolutions: Arc::default(),
            conflicts: ConflictRetry::default(),
            deployment: Deployment::default(),
        }
    }

    /// The same adapter, retrying conflicting writes as `conflicts` says.
    pub fn with_conflict_retry(mut self, conflicts: ConflictRetry) -> Self {
        self.conflicts = conflicts;
        self
    }

    /// The deployment whose policies the role counter tracks (they are not the role's own).
    pub fn for_deployment(self, deployment: Deployment) -> Self {
        Self { deployment, ..self }
    }

    /// Roles without this permissions boundary are refused (`role_without_boundary`).
    pub fn requiring_boundary(self, boundary_arn: Option<String>) -> Self {
        Self {
            required_boundary: boundary_arn,
            ..self
        }
    }

    /// Roles resolved from IAM so far (cache misses), for benchmarks to count apart.
    pub fn resolutions(&self) -> u64 {
        self.resolutions.load(Ordering::Relaxed)
    }

    fn cached(&self, key: &str) -> Option<ResolvedRole> {
        let roles = self.roles.lock().unwrap_or_else(|p| p.into_inner());
        roles
            .get(key)
            .filter(|(at, _)| at.elapsed() < ROLE_CACHE_TTL)
            .map(|(_, r)| r.clone())
    }

    /// Characters (as IAM counts them) of the role's inline policies that are not Latch's.
    async fn own_inline_chars(&self, role: &RoleArn, name: &str) -> Result<usize, IamError> {
        let mut total = 0;
        let mut names = self
            .client
            .list_role_policies()
            .role_name(name)
            .into_paginator()
            .items()
            .send();
        while let Some(policy) = names.next().await {
            let policy = policy.map_err(|e| classify(&e, false, role))?;
            // This deployment's grants are on the role counter; anything else (the team's own
            // policies, another deployment's grants) takes room Latch cannot use.
            if self.deployment.grant_id_of(&policy).is_some() {
                continue;
            }
            let doc = self
                .client
                .get_role_policy()
                .role_name(name)
                .policy_name(&policy)
                .send()
                .await
                .map_err(|e| classify(&e, false, role))?;
            let text = percent_encoding::percent_decode_str(doc.policy_document()).decode_utf8_lossy();
            total += text.chars().filter(|c| !c.is_whitespace()).count();
        }
        Ok(total)
    }
}

fn classify<E: ProvideErrorMetadata + std::error::Error>(
    err: &aws_sdk_iam::error::SdkError<E>,
    no_such_entity: bool,
    role: &RoleArn,
) -> IamError {
    let text = describe(err);
    if is_transient(err) {
        IamError::Transient(text)
    } else if no_such_entity {
        IamError::NoSuchRole(format!("{role}: {text}"))
    } else {
        IamError::Rejected(text)
    }
}

impl IamWriter for IamAdapter {
    async fn resolve_role(&self, role: &RoleArn) -> Result<ResolvedRole, IamError> {
        let key = role.name().to_ascii_lowercase();
        if let Some(hit) = self.cached(&key) {
            return Ok(hit);
        }
        self.resolutions.fetch_add(1, Ordering::Relaxed);
        let out = self
            .client
            .get_role()
            .role_name(role.name())
            .send()
            .await
            .map_err(|e| {
                let missing = e.as_service_error().is_some_and(|se| se.is_no_such_entity_exception());
                classify(&e, missing, role)
            })?;
        let Some(found) = out.role() else {
            return Err(IamError::Transient(format!(
                "GetRole {} answered without a role",
                role.name()
            )));
        };
        let arn = RoleArn::parse(found.arn())
            .map_err(|e| IamError::Rejected(format!("IAM's ARN {} for {}: {e}", found.arn(), role.name())))?;
        let boundary = found.permissions_boundary().and_then(|b| b.permissions_boundary_arn());
        let resolved = ResolvedRole {
            own_inline_chars: self.own_inline_chars(role, found.role_name()).await?,
            has_required_boundary: self
                .required_boundary
                .as_deref()
                .is_none_or(|want| boundary == Some(want)),
            role_id: found.role_id().to_owned(),
            arn,
        };
        let mut roles = self.roles.lock().unwrap_or_else(|p| p.into_inner());
        roles.insert(key, (Instant::now(), resolved.clone()));
        Ok(resolved)
    }

    async fn put_role_policy(
        &self,
        role: &RoleArn,
        policy_name: &str,
        document: &PolicyDocument,
    ) -> Result<(), IamError> {
        let put = self
            .client
            .put_role_policy()
            .role_name(role.name())
            .policy_name(policy_name)
            .policy_document(document.as_json());
        self.conflicts
            .run("PutRolePolicy", is_concurrent_modification, || put.clone().send())
            .await
            .map(|_| ())
            .map_err(|e| {
                let missing = e.as_service_error().is_some_and(|se| se.is_no_such_entity_exception());
                classify(&e, missing, role)
            })
    }

    async fn delete_role_policy(&self, role: &RoleArn, policy_name: &str) -> Result<Deletion, IamError> {
        let delete = self
            .client
            .delete_role_policy()
            .role_name(role.name())
            .policy_name(policy_name);
        match self
            .conflicts
            .run("DeleteRolePolicy", is_concurrent_modification, || delete.clone().send())
            .await
        {
            Ok(_) => Ok(Deletion::Deleted),
            // Gone already (revoked before, or the role was deleted): the goal is reached.
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_entity_exception()) => {
                Ok(Deletion::AlreadyGone)
            }
            Err(e) => Err(classify(&e, false, role)),
        }
    }
}

impl IamInventory for IamAdapter {
    async fn roles_under(&self, path_prefix: &str) -> Result<Vec<RoleArn>, IamError> {
        let mut pages = self
            .client
            .list_roles()
            .path_prefix(path_prefix)
            .into_paginator()
            .send();
        let mut roles = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                if is_transient(&e) {
                    IamError::Transient(describe(&e))
                } else {
                    IamError::Rejected(describe(&e))
                }
            })?;
            // A role IAM lists but Latch cannot parse is not one Latch could have elevated.
            roles.extend(page.roles().iter().filter_map(|r| RoleArn::parse(r.arn()).ok()));
        }
        Ok(roles)
    }

    async fn inline_policies(&self, role: &RoleArn) -> Result<Vec<String>, IamError> {
        let mut pages = self
            .client
            .list_role_policies()
            .role_name(role.name())
            .into_paginator()
            .send();
        let mut names = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                let missing = e.as_service_error().is_some_and(|se| se.is_no_such_entity_exception());
                classify(&e, missing, role)
            })?;
            names.extend(page.policy_names().iter().cloned());
        }
        Ok(names)
    }

    async fn inline_policy_document(&self, role: &RoleArn, policy_name: &str) -> Result<Option<String>, IamError> {
        match self
            .client
            .get_role_policy()
            .role_name(role.name())
            .policy_name(policy_name)
            .send()
            .await
        {
            // IAM returns the document URL-encoded.
            Ok(out) => Ok(Some(
                percent_encoding::percent_decode_str(out.policy_document())
                    .decode_utf8_lossy()
                    .into_owned(),
            )),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_no_such_entity_exception()) => Ok(None),
            Err(e) => Err(classify(&e, false, role)),
        }
    }
}
