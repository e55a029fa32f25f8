"""Exec with the official Python client: stdin written as text frames,
closed with the v5 close signal; prints what came back as JSON."""
import json
import sys
import time

from kubernetes import client, config
from kubernetes.stream import stream

config.load_kube_config(config_file=sys.argv[1], context="admin")
api = client.CoreV1Api()
resp = stream(
    api.connect_get_namespaced_pod_exec, "solo", "default",
    command=["sh", "-c", "cat; echo; echo read-done; exit 3"],
    stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False,
)
protocol = resp.subprotocol
resp.write_stdin("abc")  # a str: sent as a TEXT frame
resp.close_channel(0)    # v5: [255, 0]
stdout = ""
deadline = time.time() + 20
while resp.is_open() and time.time() < deadline:
    resp.update(timeout=1)
    if resp.peek_stdout():
        stdout += resp.read_stdout()
stdout += resp.read_stdout(timeout=0) if resp.peek_stdout() else ""
print(json.dumps({
    "protocol": protocol,
    "open": resp.is_open(),
    "stdout": stdout,
    "code": None if resp.is_open() else resp.returncode,
}))
