"""State snapshots for the bad-input drill: the cluster, the sandbox's buckets, the gateway stand-in's
endpoints and local directories, each as a plain comparable value.

Cluster: every object of every listable resource type the API server serves (found through discovery,
once per process), as kind/namespace/name -> resourceVersion. Listed with metadata only
(PartialObjectMetadataList) and in parallel, so a snapshot costs about a second.

Excluded, because they change by themselves while nothing runs (each shown to drift on an idle
sandbox, or written by the control plane on its own schedule):
- events (core and events.k8s.io): written by controllers and the scheduler at any time, and by
  definition not state a role manages;
- leases (coordination.k8s.io): node heartbeats and controller leader election renew every few seconds;
- nodes and pods compare labels, annotations, taints and spec instead of resourceVersion: kwok
  rewrites node and pod status (heartbeats, conditions) continuously. What a role could change on
  them (gpu_discovery labels nodes, a role could annotate or cordon one, a Deployment change
  replaces pods) is still compared;
- endpointslices / endpoints: the endpoint-slice controllers mirror pod readiness that kwok flips,
  and no role writes them;
- componentstatuses: a computed read, not a stored object.
"""

import concurrent.futures
import hashlib
import json
import os

from tests.helpers.sandbox import kube_client, load_env

EXCLUDED = {
    ("", "events"): "written by controllers and the scheduler at any time",
    ("events.k8s.io", "events"): "the same events through the events.k8s.io API",
    ("coordination.k8s.io", "leases"): "node heartbeats and leader election renew them every few seconds",
    ("", "endpoints"): "mirrors pod readiness that kwok flips; no role writes it",
    ("discovery.k8s.io", "endpointslices"): "mirrors pod readiness that kwok flips; no role writes it",
    ("", "componentstatuses"): "computed on read, not a stored object",
}
# Compared by content instead of resourceVersion (kwok rewrites their status).
BY_CONTENT = {("", "nodes"), ("", "pods")}

_METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


class ClusterState:
    """One API client and one discovery pass, reused by every snapshot."""

    def __init__(self):
        self.client = kube_client()
        self.resources = self._discover()

    def _get(self, path, query=None, accept="application/json"):
        response = self.client.call_api(
            path, "GET", query_params=list((query or {}).items()), header_params={"Accept": accept},
            auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True,
        )
        return json.loads(response.data)

    def _discover(self):
        versions = []
        for version in self._get("/api")["versions"]:
            versions.append(("", "/api/" + version))
        for group in self._get("/apis")["groups"]:
            preferred = group["preferredVersion"]["groupVersion"]
            versions.append((group["name"], "/apis/" + preferred))
        resources = []
        for group, base in versions:
            for item in self._get(base)["resources"]:
                name = item["name"]
                if "/" in name or "list" not in item.get("verbs", []):
                    continue  # subresources, and types that cannot be listed
                if (group, name) in EXCLUDED:
                    continue
                resources.append((group, name, base + "/" + name))
        return sorted(resources)

    def _list(self, resource):
        group, name, path = resource
        by_content = (group, name) in BY_CONTENT
        out = {}
        token = None
        while True:
            query = {"limit": 500}
            if token:
                query["continue"] = token
            body = self._get(path, query, accept="application/json" if by_content else _METADATA_ONLY)
            for item in body.get("items") or []:
                meta = item["metadata"]
                key = "%s/%s/%s/%s" % (group or "core", name, meta.get("namespace", ""), meta["name"])
                if by_content:
                    out[key] = json.dumps({"labels": meta.get("labels"), "annotations": meta.get("annotations"),
                                           "spec": item.get("spec")}, sort_keys=True)
                else:
                    out[key] = meta.get("resourceVersion")
            token = body.get("metadata", {}).get("continue")
            if not token:
                return out

    def snapshot(self):
        state = {}
        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            for part in pool.map(self._list, self.resources):
                state.update(part)
        return state


def bucket_snapshot():
    """Every bucket of the sandbox MinIO: key -> (ETag, size), plus unfinished multipart uploads."""
    import boto3
    from botocore.config import Config

    env = load_env()
    client = boto3.client(
        "s3", endpoint_url=env["SANDBOX_S3_ENDPOINT"], aws_access_key_id=env["SANDBOX_S3_ACCESS_KEY"],
        aws_secret_access_key=env["SANDBOX_S3_SECRET_KEY"], region_name=env.get("SANDBOX_S3_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}),
    )
    state = {}
    for bucket in client.list_buckets().get("Buckets", []):
        name = bucket["Name"]
        state["bucket:" + name] = True
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            for obj in page.get("Contents", []):
                state["object:%s/%s" % (name, obj["Key"])] = (obj["ETag"], obj["Size"])
        uploads = client.list_multipart_uploads(Bucket=name).get("Uploads", [])
        for upload in uploads:
            state["upload:%s/%s/%s" % (name, upload["Key"], upload["UploadId"])] = True
    return state


def gateway_snapshot():
    """The gateway stand-in's endpoints of the sandbox user: name -> (id, status, last update)."""
    import base64
    import urllib.request

    env = load_env()
    url = env["SANDBOX_LLM_ENGINE_URL"].rstrip("/") + "/v1/llm/model-endpoints"
    request = urllib.request.Request(url)  # noqa: S310 - the sandbox env file's own http URL
    token = base64.b64encode((env["SANDBOX_LLM_ENGINE_USER"] + ":").encode()).decode()
    request.add_header("Authorization", "Basic " + token)
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the sandbox env file's own http URL
        body = json.loads(response.read())
    return dict((item["name"], json.dumps(item, sort_keys=True)) for item in body.get("model_endpoints", []))


def dir_snapshot(*roots):
    """Every file and directory under ``roots``: path -> (size, mtime_ns, sha256) or 'dir'."""
    state = {}
    for root in roots:
        if not os.path.exists(root):
            state[root] = None
            continue
        for parent, _dirs, files in os.walk(root):
            state[parent] = "dir"
            for name in files:
                path = os.path.join(parent, name)
                info = os.stat(path)
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                state[path] = (info.st_size, info.st_mtime_ns, digest)
    return state


def differences(before, after):
    """Human-readable keys that were added, removed or changed between two snapshots."""
    out = []
    for key in sorted(set(before) | set(after)):
        if key not in after:
            out.append("removed %s" % key)
        elif key not in before:
            out.append("added %s" % key)
        elif before[key] != after[key]:
            out.append("changed %s: %s -> %s" % (key, str(before[key])[:200], str(after[key])[:200]))
    return out
