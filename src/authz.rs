//! Asking Kubernetes what a person may do (SubjectAccessReview), so that a
//! refusal is one clear line naming the verb and resource instead of a
//! protocol error later. The cluster's RBAC stays the only judge: every
//! call for a person is also made as that person, through impersonation.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::cluster::Identity;
use crate::pods::{TargetError, api_error, bounded};

/// One permission: verb on resource/subresource, in a namespace, on a name.
#[derive(Debug, Clone)]
pub struct Permission<'a> {
    pub verb: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

impl std::fmt::Display for Permission<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if !self.subresource.is_empty() {
            write!(f, "/{}", self.subresource)?;
        }
        if let Some(name) = self.name {
            write!(f, " {name:?}")?;
        }
        match self.namespace {
            Some(namespace) => write!(f, " in namespace {namespace:?}"),
            None => Ok(()),
        }
    }
}

/// Ok if `identity` has `permission`; a Forbidden line naming it if not.
pub async fn require(
    own: &Client,
    identity: &Identity,
    permission: &Permission<'_>,
    wait: Duration,
) -> Result<(), TargetError> {
    // Impersonated requests are authenticated as the user plus the group
    // every authenticated user has (the API server adds it); the review
    // must ask about the same set, or it refuses what RBAC grants through
    // `system:authenticated`.
    let mut groups = identity.groups.clone();
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(identity.user.clone()),
            groups: Some(groups),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(permission.verb.into()),
                resource: Some(permission.resource.into()),
                subresource: (!permission.subresource.is_empty())
                    .then(|| permission.subresource.into()),
                namespace: permission.namespace.map(Into::into),
                name: permission.name.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let reviews: Api<SubjectAccessReview> = Api::all(own.clone());
    let answer = bounded(wait, reviews.create(&PostParams::default(), &review))
        .await?
        .map_err(|e| {
            api_error(e, || {
                TargetError::Api("SubjectAccessReview is not served by this cluster".into())
            })
        })?;
    if answer.status.is_some_and(|s| s.allowed) {
        Ok(())
    } else {
        Err(TargetError::Forbidden(format!(
            "User \"{}\" may not {permission}",
            identity.user
        )))
    }
}

/// The verb the API server checks for exec and port-forward over
/// WebSocket, the only transport kube-rs speaks: `get` up to 1.34,
/// `create` from 1.35, whose feature gate
/// `AuthorizePodWebsocketUpgradeCreatePermission` (on by default) checks
/// the upgrade as the `create` it stands for (kubernetes/kubernetes#134577).
pub fn websocket_stream_verb(minor: u32) -> &'static str {
    if minor >= 35 { "create" } else { "get" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_read_like_rbac() {
        let p = Permission {
            verb: "get",
            resource: "pods",
            subresource: "exec",
            namespace: Some("prod"),
            name: Some("db-0"),
        };
        assert_eq!(p.to_string(), r#"get pods/exec "db-0" in namespace "prod""#);
        assert_eq!(websocket_stream_verb(34), "get");
        assert_eq!(websocket_stream_verb(35), "create");
    }
}
