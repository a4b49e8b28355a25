//! [`IamWriter`] on IAM: PutRolePolicy and DeleteRolePolicy, with no reads, so the grant and
//! revoke paths never ask IAM anything (quota and existence problems come back from the write).
//! [`IamInventory`] (ListRoles, ListRolePolicies) is the sweep's drift repair only.
//!
//! Both writes go through [`ConflictRetry`]: a `ConcurrentModification` (another write on the
//! same role in flight) is retried in process, and one that outlasts the budget is
//! [`IamError::Transient`], never a refusal.

use aws_sdk_iam::Client;
use aws_sdk_iam::error::ProvideErrorMetadata;
use latch_core::model::RoleArn;
use latch_core::policy::PolicyDocument;
use latch_core::ports::{Deletion, IamError, IamInventory, IamWriter};

use crate::conflicts::ConflictRetry;
use crate::errors::{describe, is_concurrent_modification, is_transient};

#[derive(Debug, Clone)]
pub struct IamAdapter {
    client: Client,
    conflicts: ConflictRetry,
}

impl IamAdapter {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            conflicts: ConflictRetry::default(),
        }
    }

    /// The same adapter, retrying conflicting writes as `conflicts` says.
    pub fn with_conflict_retry(mut self, conflicts: ConflictRetry) -> Self {
        self.conflicts = conflicts;
        self
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
}
