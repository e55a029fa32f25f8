//! Local (`ssh -L`) and dynamic (`ssh -D`) port forwarding: each
//! direct-tcpip channel becomes one `pods/portforward` stream into the
//! target's network namespace: the pod's, or the node's through its
//! host-network node-shell pod.
//!
//! The Kubernetes port-forward protocol reaches "the pod itself" only, so
//! the destination host must name the target (loopback, the pod's name or
//! IP, the node's name); anything else is refused with that reason.

use russh::server::Msg;
use russh::{Channel, ChannelMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
pub fn refusal(target: &ExecTarget, host: &str) -> String {
    format!(
        "kbastion forwards only to the target itself ({}), not to {host:?}",
        target.local_names.join(", ")
    )
}

/// Carries one forwarded connection until either side ends it; gives the
/// bytes carried each way (client to pod, pod to client).
pub async fn carry(
    target: &ExecTarget,
    port: u16,
    channel: Channel<Msg>,
) -> Result<(u64, u64), String> {
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
    let (mut ssh_read, ssh_write) = channel.split();
    // Client to pod. At the client's EOF the pod side is NOT shut down:
    // Kubernetes port-forward has no half-close and would drop the answer.
    // When the client closes the channel (or its connection is gone), the
    // whole forward ends, so a pod that never closes cannot keep it alive.
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let upstream = {
        let sent = sent.clone();
        async move {
            let mut pod_open = true;
            loop {
                match ssh_read.wait().await {
                    Some(ChannelMsg::Data { data }) if pod_open => {
                        if pod_write.write_all(&data).await.is_err() {
                            pod_open = false;
                        }
                        sent.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                }
            }
        }
    };
    let mut to_client = ssh_write.make_writer();
    let received = std::sync::atomic::AtomicU64::new(0);
    let downstream = async {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            let n = match pod_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if to_client.write_all(&buffer[..n]).await.is_err() {
                break;
            }
            received.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let _ = to_client.shutdown().await;
    };
    tokio::select! {
        () = downstream => {}
        () = upstream => {}
    }
    let received = received.load(std::sync::atomic::Ordering::Relaxed);
    let _ = ssh_write.eof().await;
    let _ = ssh_write.close().await;
    forwarder.abort();
    if let Some(error) = error
        && let Ok(Some(message)) =
            tokio::time::timeout(std::time::Duration::from_millis(100), error).await
    {
        return Err(message);
    }
    Ok((sent.load(std::sync::atomic::Ordering::Relaxed), received))
}
