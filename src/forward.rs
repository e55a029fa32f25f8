//! Local (`ssh -L`) and dynamic (`ssh -D`) port forwarding: each
//! direct-tcpip channel becomes one `pods/portforward` stream into the
//! target's network namespace: the pod's, or the node's through its
//! host-network node-shell pod.
//!
//! The Kubernetes port-forward protocol reaches "the pod itself" only, so
//! the destination host must name the target (loopback, the pod's name or
//! IP, the node's name); anything else is refused with that reason.

use russh::server::Msg;
use russh::{Channel, ChannelOpenFailure};
use tokio::io::AsyncWriteExt;

use crate::target::ExecTarget;

/// Whether `host` names the target itself.
pub fn destination_allowed(target: &ExecTarget, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    target
        .local_names
        .iter()
        .any(|name| name.eq_ignore_ascii_case(host))
}

/// The reason a client reads when a destination is refused.
pub fn refusal(target: &ExecTarget, host: &str) -> ChannelOpenFailure {
    ChannelOpenFailure::Other {
        code: 1, // SSH_OPEN_ADMINISTRATIVELY_PROHIBITED
        reason: format!(
            "kbastion forwards only to the target itself ({}), not to {host:?}",
            target.local_names.join(", ")
        ),
    }
}

/// Carries one forwarded connection until either side ends it.
pub async fn carry(target: &ExecTarget, port: u16, channel: Channel<Msg>) -> Result<(), String> {
    let mut forwarder = target
        .pods
        .portforward(&target.pod, &[port])
        .await
        .map_err(|e| {
            format!(
                "port-forward to {}/{} port {port}: {e}",
                target.namespace, target.pod
            )
        })?;
    let stream = forwarder
        .take_stream(port)
        .ok_or("port-forward gave no stream")?;
    let error = forwarder.take_error(port);
    let (mut pod_read, mut pod_write) = tokio::io::split(stream);
    let (mut ssh_read, mut ssh_write) = tokio::io::split(channel.into_stream());
    // Client to pod: at the client's EOF the pod side is NOT shut down:
    // Kubernetes port-forward has no half-close and would drop the answer.
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut ssh_read, &mut pod_write).await;
        pod_write
    });
    let _ = tokio::io::copy(&mut pod_read, &mut ssh_write).await;
    let _ = ssh_write.shutdown().await;
    upstream.abort();
    forwarder.abort();
    if let Some(error) = error
        && let Ok(Some(message)) =
            tokio::time::timeout(std::time::Duration::from_millis(100), error).await
    {
        return Err(message);
    }
    Ok(())
}
