//! The key that signs the credentials every replica accepts (the kubectl
//! door's), kept in one Secret in the bastion's namespace
//! (`signing_secret`): the first replica that needs it creates it, and
//! every other replica reads the same one. Nothing else is shared between
//! replicas.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

/// The Secret's entry holding the HMAC key.
const ENTRY: &str = "hs256";

/// Bytes of key: SHA-256's block-size worth is more than HS256 needs.
const KEY_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error(
        "cannot read or create the signing Secret {namespace}/{name}: {source}; the bastion's ServiceAccount needs get and create on it (`kbastion rbac`)"
    )]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "the signing Secret {namespace}/{name} has no usable `{ENTRY}` entry (at least {KEY_BYTES} bytes); delete it and every replica will agree on a new one"
    )]
    Malformed { namespace: String, name: String },
    #[error("the Kubernetes API did not answer within {0:?} while reading the signing Secret")]
    Timeout(std::time::Duration),
}

/// The shared signing key.
#[derive(Clone)]
pub struct SigningKey {
    secret: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// Reads the Secret `namespace/name`, creating it with a new random key
    /// when it does not exist. Two replicas starting at once agree: the
    /// second one's create fails with a conflict, and it reads the first's.
    pub async fn load(
        client: kube::Client,
        namespace: &str,
        name: &str,
        wait: std::time::Duration,
    ) -> Result<SigningKey, SigningError> {
        tokio::time::timeout(wait, Self::get_or_create(client, namespace, name))
            .await
            .map_err(|_| SigningError::Timeout(wait))?
    }

    async fn get_or_create(
        client: kube::Client,
        namespace: &str,
        name: &str,
    ) -> Result<SigningKey, SigningError> {
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let failed = |source| SigningError::Api {
            namespace: namespace.into(),
            name: name.into(),
            source,
        };
        if let Some(secret) = api.get_opt(name).await.map_err(failed)? {
            return Self::of(&secret, namespace, name);
        }
        let fresh: [u8; KEY_BYTES] = rand::random();
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/name".to_string(),
                    "kbastion".to_string(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                ENTRY.to_string(),
                ByteString(fresh.to_vec()),
            )])),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(created) => Self::of(&created, namespace, name),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let secret = api.get(name).await.map_err(failed)?;
                Self::of(&secret, namespace, name)
            }
            Err(error) => Err(failed(error)),
        }
    }

    fn of(secret: &Secret, namespace: &str, name: &str) -> Result<SigningKey, SigningError> {
        match secret.data.as_ref().and_then(|d| d.get(ENTRY)) {
            Some(ByteString(bytes)) if bytes.len() >= KEY_BYTES => Ok(SigningKey {
                secret: bytes.clone(),
            }),
            _ => Err(SigningError::Malformed {
                namespace: namespace.into(),
                name: name.into(),
            }),
        }
    }

    /// The key in a Secret's bytes (at least 32), as `load` reads it: for
    /// tools and tests that hold the Secret themselves.
    pub fn from_bytes(bytes: &[u8]) -> Option<SigningKey> {
        (bytes.len() >= KEY_BYTES).then(|| SigningKey {
            secret: bytes.to_vec(),
        })
    }

    /// A key of its own, for unit tests.
    #[cfg(test)]
    pub fn random() -> SigningKey {
        let fresh: [u8; KEY_BYTES] = rand::random();
        SigningKey {
            secret: fresh.to_vec(),
        }
    }

    /// The key's bytes, for the HMAC.
    pub fn bytes(&self) -> &[u8] {
        &self.secret
    }
}
