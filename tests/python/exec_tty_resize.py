"""A tty exec with the official Python client: a resize sent on channel 4
(as a text frame, as the client sends it), then a line on stdin (binary)
that lets the command print the terminal's size."""
import json
import sys
import time

from kubernetes import client, config
from kubernetes.stream import stream

config.load_kube_config(config_file=sys.argv[1], context="admin")
api = client.CoreV1Api()
resp = stream(
    api.connect_get_namespaced_pod_exec, "solo", "default",
    command=["sh", "-c", "read line; stty size"],
    stdin=True, stdout=True, stderr=False, tty=True, _preload_content=False,
)
resp.write_channel(4, json.dumps({"Width": 100, "Height": 37}))  # a str: a TEXT frame
# Bytes go as a binary frame: only the resize depends on text frames.
resp.write_stdin(b"go\n")
stdout = ""
deadline = time.time() + 20
while resp.is_open() and time.time() < deadline:
    resp.update(timeout=1)
    if resp.peek_stdout():
        stdout += resp.read_stdout()
print(json.dumps({
    "open": resp.is_open(),
    "stdout": stdout,
    "code": None if resp.is_open() else resp.returncode,
}))
