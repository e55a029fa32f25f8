//! A person made from a provider's claims: who they are (keyed on the
//! issuer and `sub`, named by the username claim), their groups, and the
//! Kubernetes user and groups kbastion impersonates for them (always
//! under the configured prefixes, only the allowed groups).

use serde::{Deserialize, Serialize};

use crate::cluster::Identity;
use crate::config::OidcConfig;

/// Who the provider said signed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claimed {
    /// The person's login name (the username claim).
    pub name: String,
    pub issuer: String,
    /// The provider's `sub`: stable and unique, unlike the name.
    pub subject: String,
    /// The groups claim, as the provider gave it (unprefixed).
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("the provider's ID token has no {0:?} claim to name you by (oidc.username_claim)")]
    NoName(String),
    #[error("the provider names you {name:?} (claim {claim:?}), which is not a login name: {why}")]
    BadName {
        name: String,
        claim: String,
        why: String,
    },
    #[error(
        "{0:?} is a person configured on this bastion; they log in with their keys, not the provider"
    )]
    Configured(String),
    #[error("none of your groups ({groups}) may use this bastion (oidc.allowed_groups)")]
    NotAllowed { groups: String },
    #[error("the provider's {0:?} claim is not a list of group names (oidc.groups_claim)")]
    BadGroups(String),
}

/// A claim's value as a string, looked up among the standard claims the
/// crate keeps apart and the others.
fn claim_text(claims: &super::provider::Claims, name: &str) -> Option<String> {
    if let Some(value) = claims.additional_claims().claims.get(name) {
        return value.as_str().map(str::to_string);
    }
    match name {
        "preferred_username" => claims.preferred_username().map(|v| v.to_string()),
        "email" => claims.email().map(|v| v.to_string()),
        "sub" => Some(claims.subject().to_string()),
        "nickname" => claims
            .nickname()
            .and_then(|n| n.get(None))
            .map(|v| v.to_string()),
        "name" => claims
            .name()
            .and_then(|n| n.get(None))
            .map(|v| v.to_string()),
        _ => None,
    }
}

impl Claimed {
    /// The person a verified ID token names, as `config` maps claims.
    pub fn from_claims(
        claims: &super::provider::Claims,
        config: &OidcConfig,
    ) -> Result<Claimed, ClaimError> {
        let name = claim_text(claims, &config.username_claim)
            .ok_or_else(|| ClaimError::NoName(config.username_claim.clone()))?;
        crate::login::validate_person(&name).map_err(|why| ClaimError::BadName {
            name: crate::login::for_log(&name),
            claim: config.username_claim.clone(),
            why,
        })?;
        let groups = match claims.additional_claims().claims.get(&config.groups_claim) {
            None => Vec::new(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|g| g.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ClaimError::BadGroups(config.groups_claim.clone()))?,
            Some(serde_json::Value::String(one)) => vec![one.clone()],
            Some(_) => return Err(ClaimError::BadGroups(config.groups_claim.clone())),
        };
        Ok(Claimed {
            name,
            issuer: claims.issuer().to_string(),
            subject: claims.subject().to_string(),
            groups,
        })
    }

    /// Whether this person may sign in under `config` with `users`
    /// configured beside them.
    pub fn admissible(
        &self,
        config: &OidcConfig,
        users: &[crate::config::User],
    ) -> Result<(), ClaimError> {
        if users.iter().any(|u| u.name == self.name) {
            return Err(ClaimError::Configured(self.name.clone()));
        }
        if !config.allowed_groups.is_empty()
            && !self
                .groups
                .iter()
                .any(|g| config.allowed_groups.contains(g))
        {
            let groups = if self.groups.is_empty() {
                "none".to_string()
            } else {
                self.groups.join(", ")
            };
            return Err(ClaimError::NotAllowed {
                groups: crate::login::for_log(&groups),
            });
        }
        Ok(())
    }

    /// The Kubernetes user and groups impersonated for this person: the
    /// prefixes and their name, and each allowed group.
    pub fn identity(&self, config: &OidcConfig) -> Identity {
        Identity {
            user: format!("{}{}", config.kubernetes_user_prefix, self.name),
            groups: self
                .groups
                .iter()
                .filter(|g| config.allowed_groups.is_empty() || config.allowed_groups.contains(g))
                .map(|g| format!("{}{g}", config.kubernetes_group_prefix))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(allowed: &[&str]) -> OidcConfig {
        let mut config: OidcConfig = toml::from_str(
            "issuer = \"https://id.example.com\"\nclient_id = \"k\"\nclient_secret_file = \"s\"\n",
        )
        .unwrap();
        config.allowed_groups = allowed.iter().map(|g| g.to_string()).collect();
        config
    }

    fn carol(groups: &[&str]) -> Claimed {
        Claimed {
            name: "carol".into(),
            issuer: "https://id.example.com".into(),
            subject: "1234".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn identities_are_prefixed_and_hold_only_allowed_groups() {
        let identity = carol(&["devs", "system:masters", "ops"]).identity(&config(&[]));
        assert_eq!(identity.user, "oidc:carol");
        assert_eq!(
            identity.groups,
            ["oidc:devs", "oidc:system:masters", "oidc:ops"]
        );
        let identity = carol(&["devs", "ops"]).identity(&config(&["ops"]));
        assert_eq!(identity.groups, ["oidc:ops"]);
    }

    #[test]
    fn configured_people_and_other_groups_are_refused_in_one_line() {
        let users: Vec<crate::config::User> =
            toml::from_str::<toml::Value>("[[users]]\nname = \"carol\"\n").unwrap()["users"]
                .clone()
                .try_into()
                .unwrap();
        let error = carol(&[]).admissible(&config(&[]), &users).unwrap_err();
        assert!(matches!(error, ClaimError::Configured(_)), "{error}");
        let error = carol(&["devs"])
            .admissible(&config(&["ops"]), &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "none of your groups (devs) may use this bastion (oidc.allowed_groups)"
        );
        carol(&["ops"]).admissible(&config(&["ops"]), &[]).unwrap();
    }
}
