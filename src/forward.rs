//! Local (`ssh -L`) and dynamic (`ssh -D`) port forwarding: each
//! direct-tcpip channel becomes one `pods/portforward` stream into the
//! target's network namespace: the pod's, or the node's through its
//! host-network node-shell pod.
//!
//! The Kubernetes port-forward protocol reaches "the pod itself" only, so
//! the destination host must name the target (loopback, the pod's name or
//! IP, the node's name); anything else is refused with that reason.

use std::sync::atomic::Ordering;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::pods::ExecTarget;
use crate::session::control::{Activity, Counted};
use crate::session::io::Chunk;
use crate::session::io::{ClientEvent, ClientInput, ClientOutput};

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

/// Messages of client input waiting for the pod's socket: a few packets,
/// to keep it busy. The client's window is what lets it run ahead; a pod
/// that reads slowly holds back only this channel's sender.
const TO_POD_QUEUE: usize = 8;

/// Carries one forwarded connection until either side ends it, counting
/// what it carries in `activity` (in: client to pod, out: pod to client).
/// What the client sends is handed to the pod at the pod's pace: each
/// chunk gives the client's window back once written (`Chunk`).
pub async fn carry(
    target: &ExecTarget,
    port: u16,
    mut input: impl ClientInput,
    output: &impl ClientOutput,
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
    let (queue, mut queued) = tokio::sync::mpsc::channel::<Chunk>(TO_POD_QUEUE);
    // Client to pod. At the client's EOF the pod side is NOT shut down:
    // Kubernetes port-forward has no half-close and would drop the answer.
    let to_pod = async {
        let mut pod_open = true;
        while let Some(data) = queued.recv().await {
            if pod_open && pod_write.write_all(&data).await.is_err() {
                pod_open = false;
            }
        }
        // Only reached when the reader below has ended the forward.
        std::future::pending::<()>().await;
    };
    // When the client closes the channel (or its connection is gone), the
    // whole forward ends, so a pod that never closes cannot keep it alive;
    // `departed` tells even while input waits for a pod that reads slowly.
    let departed = input.departed();
    let from_client = async {
        loop {
            match input.next().await {
                ClientEvent::Data(data) => {
                    activity
                        .bytes_in
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    if queue.send(data).await.is_err() {
                        return Ok::<(), String>(());
                    }
                }
                ClientEvent::Gone => return Ok(()),
                // Port-forward has no half-close (see `to_pod`).
                ClientEvent::Eof | ClientEvent::Resize { .. } => {}
            }
        }
    };
    let to_client = async {
        let mut to_client = Counted::new(output.stdout(), activity);
        // 32 KiB reads: one full SSH packet each.
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            let n = match pod_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if to_client.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
        let _ = to_client.shutdown().await;
    };
    let ended: Result<(), String> = tokio::select! {
        () = to_client => Ok(()),
        result = from_client => result,
        () = to_pod => Ok(()),
        () = departed => Ok(()),
    };
    // Not read any more: dropped, so what it still holds gives its room
    // back to the channel's window.
    drop(input);
    output.close().await;
    forwarder.abort();
    ended?;
    if let Some(error) = error
        && let Ok(Some(message)) =
            tokio::time::timeout(std::time::Duration::from_millis(100), error).await
    {
        return Err(message);
    }
    Ok(())
}
