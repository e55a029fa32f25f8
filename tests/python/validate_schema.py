"""Reads every kind the simulator serves (found through discovery), the
answers of reviews, watch events, and the Status objects of failures and
of exec's error channel, and validates each against the Kubernetes
OpenAPI schema of the server's version (kubernetes-validate's strict
schemas: required fields, types, no unknown fields). Prints one line per
problem and exits 1 if there is any."""
import json
import sys

import jsonschema
import kubernetes_validate.utils as kv
from kubernetes import client, config
from kubernetes.stream import stream
from referencing import Registry, Resource

kubeconfig = sys.argv[1]


def api_for(context):
    return config.new_client_from_config(config_file=kubeconfig, context=context)


admin = api_for("admin")


def request(api, method, path, body=None, query=None):
    """(status, body bytes) of a request with the client's credentials."""
    serialized = api.param_serialize(
        method, path, query_params=query,
        header_params={"Accept": "application/json", "Content-Type": "application/json"},
        body=body, auth_settings=["BearerToken"])
    try:
        response = api.call_api(*serialized)
        return response.status, response.read()
    except client.ApiException as e:
        return e.status, e.body


def call(api, method, path, body=None, expect=None):
    """Raw JSON of an answer; `expect` is the failure status wanted."""
    status, data = request(api, method, path, body)
    if expect is not None:
        assert status == expect, f"{method} {path}: {status}, wanted {expect}: {data}"
    else:
        assert status < 300, f"{method} {path}: {status}: {data}"
    return json.loads(data)


version = call(admin, "GET", "/version")
minor = version["minor"].rstrip("+")
schema_version = kv.major_minor(f"1.{minor}")
schema_dir = f"kubernetes-json-schema/v{[v for v in kv.all_versions() if kv.major_minor(v) == schema_version][0]}-local-strict"
definitions = Resource.from_contents(kv.schema_contents(f"{schema_dir}/_definitions.json", schema_version))
problems = []
checked = {}


def schema_file(kind, api_version):
    if kind in ("Status", "WatchEvent"):
        return f"{kind.lower()}-meta-v1.json"
    group_version = api_version.split("/")
    if len(group_version) == 1:
        return f"{kind.lower()}-{api_version}.json"
    return f"{kind.lower()}-{group_version[0].split('.')[0]}-{group_version[1]}.json"


def validate(what, obj, kind=None, api_version=None):
    kind = kind or obj.get("kind")
    api_version = api_version or obj.get("apiVersion")
    if not kind or not api_version:
        problems.append(f"{what}: no kind/apiVersion")
        return
    schema = kv.schema_contents(f"{schema_dir}/{schema_file(kind, api_version)}", schema_version)
    registry = definitions @ (Resource.from_contents(schema) @ Registry())
    validator = jsonschema.validators.Draft202012Validator(schema, registry=registry)
    for error in validator.iter_errors(obj):
        location = ".".join(str(p) for p in error.absolute_path)
        problems.append(f"{what}: {kind} {location}: {error.message}")
    checked[kind] = checked.get(kind, 0) + 1


# Every listable resource that discovery names.
group_versions = ["/api/v1"] + [
    f"/apis/{v['groupVersion']}"
    for g in call(admin, "GET", "/apis")["groups"] for v in g["versions"]
]
for base in group_versions:
    for resource in call(admin, "GET", base)["resources"]:
        if "/" in resource["name"] or "list" not in resource["verbs"]:
            continue
        listed = call(admin, "GET", f"{base}/{resource['name']}")
        validate(f"list {resource['name']}", listed)
        item_version = base.removeprefix("/api/").removeprefix("/apis/")
        for item in listed["items"]:
            meta = item["metadata"]
            name = f"{resource['name']} {meta.get('namespace', '')}/{meta['name']}"
            validate(name, item, resource["kind"], item_version)
            path = f"{base}/namespaces/{meta['namespace']}/{resource['name']}/{meta['name']}" \
                if resource["namespaced"] else f"{base}/{resource['name']}/{meta['name']}"
            validate(f"get {name}", call(admin, "GET", path))
        # Watch events, starting with the ADDED of what exists.
        status, watched = request(admin, "GET", f"{base}/{resource['name']}",
                                  query=[("watch", "1"), ("timeoutSeconds", "1")])
        assert status == 200, f"watch {resource['name']}: {status}"
        for line in watched.decode().splitlines():
            event = json.loads(line)
            validate(f"watch {resource['name']}", event, "WatchEvent", "v1")
            validate(f"watch {resource['name']} object", event["object"], resource["kind"], item_version)

# Reviews.
ssar = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "create", "resource": "pods", "subresource": "exec", "namespace": "default"}}}
validate("selfsubjectaccessreview", call(admin, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", ssar))
sar = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
       "spec": {"user": "bob", "groups": ["system:authenticated"], "resourceAttributes": {"verb": "list", "resource": "nodes"}}}
validate("subjectaccessreview", call(admin, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", sar))

# Created, patched and deleted objects, as answered.
role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "schema-check", "namespace": "default"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}
validate("create role", call(admin, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles", role))
validate("delete role", call(admin, "DELETE", "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles/schema-check"))
pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "schema-check", "namespace": "default"},
       "spec": {"terminationGracePeriodSeconds": 0, "containers": [{"name": "main", "image": "busybox"}]}}
validate("create pod", call(admin, "POST", "/api/v1/namespaces/default/pods", pod))
validate("delete pod", call(admin, "DELETE", "/api/v1/namespaces/default/pods/schema-check"))

# Failures answer with a Status.
bob = api_for("bob")
validate("404", call(admin, "GET", "/api/v1/namespaces/default/pods/nope", expect=404))
validate("403", call(bob, "GET", "/api/v1/nodes", expect=403))
validate("409", call(admin, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}}, expect=409))
validate("422", call(admin, "POST", "/api/v1/namespaces/default/pods",
                     {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "empty"}, "spec": {"containers": []}}, expect=422))
validate("400 exec", call(admin, "POST", "/api/v1/namespaces/default/pods/web-0/exec?command=true&stdout=1&container=nope", expect=400))

# Exec's error channel: Success, and a non-zero exit code.
for command, wanted in ((["true"], "Success"), (["sh", "-c", "exit 3"], "Failure")):
    resp = stream(client.CoreV1Api(admin).connect_get_namespaced_pod_exec, "solo", "default", command=command,
                  stdout=True, stderr=True, stdin=False, tty=False, _preload_content=False)
    resp.run_forever(timeout=20)
    status = json.loads(resp.read_channel(3))
    assert status["status"] == wanted, status
    validate(f"exec {command} status", status, "Status", "v1")

for problem in problems:
    print(problem)
print(json.dumps({"version": schema_version, "checked": checked, "problems": len(problems)}))
sys.exit(1 if problems else 0)
