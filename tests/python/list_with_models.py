"""Lists what the simulator serves through the official Python client's
typed API: every object is deserialized into its model, which checks the
fields the OpenAPI schema requires (client-side validation is on by
default). Prints what was read; raises on the first invalid object."""
import json
import sys

from kubernetes import client, config

config.load_kube_config(config_file=sys.argv[1], context="admin")
assert client.Configuration.get_default_copy().client_side_validation
core = client.CoreV1Api()
rbac = client.RbacAuthorizationV1Api()
coordination = client.CoordinationV1Api()
authz = client.AuthorizationV1Api()
seen = {}
nodes = core.list_node().items
seen["nodes"] = [n.metadata.name for n in nodes]
for node in nodes:
    core.read_node(node.metadata.name)
pods = core.list_pod_for_all_namespaces().items
seen["pods"] = sorted(f"{p.metadata.namespace}/{p.metadata.name}" for p in pods)
for pod in pods:
    core.read_namespaced_pod(pod.metadata.name, pod.metadata.namespace)
    core.read_namespaced_pod_status(pod.metadata.name, pod.metadata.namespace)
seen["namespaces"] = [n.metadata.name for n in core.list_namespace().items]
seen["roles"] = len(rbac.list_role_for_all_namespaces().items)
seen["rolebindings"] = len(rbac.list_role_binding_for_all_namespaces().items)
seen["clusterroles"] = len(rbac.list_cluster_role().items)
seen["clusterrolebindings"] = len(rbac.list_cluster_role_binding().items)
seen["leases"] = len(coordination.list_lease_for_all_namespaces().items)
review = authz.create_self_subject_access_review(client.V1SelfSubjectAccessReview(
    spec=client.V1SelfSubjectAccessReviewSpec(resource_attributes=client.V1ResourceAttributes(
        verb="create", resource="pods", subresource="exec", namespace="default"))))
seen["selfsubjectaccessreview"] = review.status.allowed
review = authz.create_subject_access_review(client.V1SubjectAccessReview(
    spec=client.V1SubjectAccessReviewSpec(user="bob", resource_attributes=client.V1ResourceAttributes(
        verb="list", resource="nodes"))))
seen["subjectaccessreview"] = review.status.allowed
print(json.dumps(seen))
