"""The official Python client through kbastion's kubectl door, with the
kubeconfig `ssh PERSON@bastion kubeconfig` printed (its exec plugin runs
ssh): a list, an exec with stdin, and a watch; prints the results as
JSON."""
import json
import sys
import time

from kubernetes import client, config, watch
from kubernetes.stream import stream

config.load_kube_config(config_file=sys.argv[1])
api = client.CoreV1Api()
names = sorted(p.metadata.name for p in api.list_namespaced_pod("default").items)

resp = stream(
    api.connect_get_namespaced_pod_exec, "web-0", "default",
    container="app",
    command=["sh", "-c", "cat; echo; echo role=$ROLE; exit 4"],
    stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False,
)
resp.write_stdin("from python")
resp.close_channel(0)
stdout = ""
deadline = time.time() + 20
while resp.is_open() and time.time() < deadline:
    resp.update(timeout=1)
    if resp.peek_stdout():
        stdout += resp.read_stdout()
stdout += resp.read_stdout(timeout=0) if resp.peek_stdout() else ""
code = None if resp.is_open() else resp.returncode

watched = []
for event in watch.Watch().stream(api.list_namespaced_pod, "default", timeout_seconds=2):
    watched.append([event["type"], event["object"].metadata.name])

print(json.dumps({
    "names": names,
    "stdout": stdout,
    "code": code,
    "watched": watched,
}))
