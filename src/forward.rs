//! Local (`ssh -L`) and dynamic (`ssh -D`) port forwarding: each
//! direct-tcpip channel becomes one `pods/portforward` stream into the
//! target's network namespace: the pod's, or the node's through its
//! host-network node-shell pod.
//!
//! The Kubernetes port-forward protocol reaches "the pod itself" only, so
//! the destination host must name the target (loopback, the pod's name or
//! IP, the node's name); anything else is refused with that reason.

use std::sync::atomic::Ordering;

use russh::server::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use tokio::io::AsyncWriteExt;

use crate::session::{Activity, Counted};
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

/// Carries one forwarded connection until either side ends it, counting
/// what it carries in `activity` (in: client to pod, out: pod to client).
pub async fn carry(
    target: &ExecTarget,
    port: u16,
    mut ssh_read: ChannelReadHalf,
    ssh_write: &ChannelWriteHalf<Msg>,
    activity: &Activity,
) -> Result<(), String> {
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
    // Client to pod. At the client's EOF the pod side is NOT shut down:
    // Kubernetes port-forward has no half-close and would drop the answer.
    // When the client closes the channel (or its connection is gone), the
    // whole forward ends, so a pod that never closes cannot keep it alive.
    let upstream = async {
        let mut pod_open = true;
        loop {
            match ssh_read.wait().await {
                Some(ChannelMsg::Data { data }) if pod_open => {
                    if pod_write.write_all(&data).await.is_err() {
                        pod_open = false;
                    }
                    activity
                        .bytes_in
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Some(ChannelMsg::Close) | None => break,
                Some(_) => {}
            }
        }
    };
    let mut to_client = Counted::new(ssh_write.make_writer(), activity);
    let downstream = async {
        // 32 KiB reads: one full SSH packet each.
        let mut pod_read = tokio::io::BufReader::with_capacity(32 * 1024, &mut pod_read);
        let _ = tokio::io::copy_buf(&mut pod_read, &mut to_client).await;
        let _ = to_client.shutdown().await;
    };
    tokio::select! {
        () = downstream => {}
        () = upstream => {}
    }
    let _ = ssh_write.eof().await;
    let _ = ssh_write.close().await;
    forwarder.abort();
    if let Some(error) = error
        && let Ok(Some(message)) =
            tokio::time::timeout(std::time::Duration::from_millis(100), error).await
    {
        return Err(message);
    }
    Ok(())
}
