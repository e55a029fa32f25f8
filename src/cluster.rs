//! The bastion's way to the Kubernetes API: its own client, and clients
//! that impersonate a user's Kubernetes identity (one per identity, kept so
//! that TLS connections are reused across sessions).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot load the kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("cannot create a Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A Kubernetes identity to impersonate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    pub user: String,
    pub groups: Vec<String>,
}

pub struct Cluster {
    config: Config,
    own: Client,
    impersonating: Mutex<HashMap<Identity, Client>>,
}

/// The User-Agent of the bastion's requests, as the API server's audit
/// log shows it.
const USER_AGENT: &str = concat!("kbastion/", env!("CARGO_PKG_VERSION"));

/// Sets the User-Agent of a client's requests.
fn with_user_agent(config: &Config, agent: &str) -> Result<Config, ClusterError> {
    let mut config = config.clone();
    let value = http::HeaderValue::from_str(agent)
        .map_err(|e| ClusterError::Client(kube::Error::HttpError(http::Error::from(e))))?;
    config.headers.push((http::header::USER_AGENT, value));
    Ok(config)
}

impl Cluster {
    pub async fn connect(
        kubeconfig: Option<&std::path::Path>,
        context: Option<&str>,
        connect_timeout: Duration,
    ) -> Result<Arc<Self>, ClusterError> {
        let options = KubeConfigOptions {
            context: context.map(str::to_owned),
            ..Default::default()
        };
        let mut config = match kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path)
                    .map_err(|e| ClusterError::Kubeconfig(format!("{}: {e}", path.display())))?;
                Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|e| ClusterError::Kubeconfig(format!("{}: {e}", path.display())))?
            }
            None if context.is_some() => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| ClusterError::Kubeconfig(e.to_string()))?,
            None => Config::infer()
                .await
                .map_err(|e| ClusterError::Kubeconfig(e.to_string()))?,
        };
        config.connect_timeout = Some(connect_timeout);
        // Exec streams are long-lived: no read timeout on the connection;
        // API calls are bounded one by one instead.
        config.read_timeout = None;
        let own = Client::try_from(with_user_agent(&config, USER_AGENT)?)?;
        Ok(Arc::new(Cluster {
            config,
            own,
            impersonating: Mutex::default(),
        }))
    }

    /// The bastion's own client, for what it does itself.
    pub fn own(&self) -> Client {
        self.own.clone()
    }

    /// A client that acts as `identity` (Impersonate-User/-Group), so the
    /// cluster's RBAC decides what the person may do.
    pub fn as_user(&self, identity: &Identity) -> Result<Client, ClusterError> {
        let mut clients = self.impersonating.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(identity) {
            return Ok(client.clone());
        }
        let mut config = with_user_agent(&self.config, USER_AGENT)?;
        config.auth_info.impersonate = Some(identity.user.clone());
        config.auth_info.impersonate_groups =
            (!identity.groups.is_empty()).then(|| identity.groups.clone());
        let client = Client::try_from(config)?;
        clients.insert(identity.clone(), client.clone());
        Ok(client)
    }
}
