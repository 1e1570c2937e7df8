"""The command line, as users type it: get -o json/yaml/wide, logs, exec, top, list."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from podhop.backends.local.cluster import LocalCluster

pytestmark = pytest.mark.integration
PODHOP = [sys.executable, "-m", "podhop"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def podhop(cluster: LocalCluster, *args: str) -> str:
    env = {**os.environ, "PODHOP_CLUSTER": cluster.name}
    out = subprocess.run([*PODHOP, *args], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_kubectl_shaped_output(cluster: LocalCluster) -> None:
    podhop(cluster, "apply", "-f", str(EXAMPLES / "redis.yaml"))
    pods = json.loads(podhop(cluster, "get", "pods", "-o", "json"))
    assert pods["kind"] == "List" and len(pods["items"]) == 1
    pod = pods["items"][0]
    assert pod["metadata"]["name"].startswith("redis-")
    assert pod["metadata"]["labels"]["app"] == "redis"
    assert pod["status"]["phase"] == "Running"
    node = pod["spec"]["nodeName"]
    nodes = yaml.safe_load(podhop(cluster, "get", "nodes", "-o", "yaml"))
    cidr = next(n["spec"]["podCIDR"] for n in nodes["items"] if n["metadata"]["name"] == node)
    assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(cidr)
    svcs = json.loads(podhop(cluster, "get", "services", "-o", "json"))
    svc = svcs["items"][0]
    assert svc["spec"]["clusterIP"].startswith("10.") and svc["spec"]["ports"][0]["port"] == 6379
    wide = podhop(cluster, "get", "pods", "-o", "wide")
    assert pod["status"]["podIP"] in wide and node in wide

    # exec reaches the container; from another pod, redis answers through its service VIP
    name = pod["metadata"]["name"]
    assert podhop(cluster, "exec", name, "--", "cat", "/etc/hostname").strip() == name
    podhop(cluster, "apply", "-f", str(EXAMPLES / "nginx.yaml"))
    client = next(
        p["metadata"]["name"]
        for p in json.loads(podhop(cluster, "get", "pods", "-o", "json"))["items"]
        if p["metadata"]["name"].startswith("nginx-")
    )
    pong = podhop(cluster, "exec", client, "--", "redis-cli", "-h", svc["spec"]["clusterIP"], "ping")
    assert pong.strip() == "PONG"
    # the monitor kept redis' startup output
    assert "Ready to accept connections" in podhop(cluster, "logs", name)

    top = podhop(cluster, "top", "pods", "--sort-by", "memory", "--window", "0.5")
    assert top.splitlines()[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)", "NODE"]
    assert name in top
    assert cluster.name in subprocess.run([*PODHOP, "cluster", "list"], capture_output=True, text=True).stdout


def test_unknown_pod_and_cluster_errors(cluster: LocalCluster) -> None:
    out = subprocess.run([*PODHOP, "logs", "nope", "--cluster", cluster.name], capture_output=True, text=True)
    assert out.returncode == 1 and 'pod "nope" not found' in out.stderr
    out = subprocess.run(
        [*PODHOP, "get", "pods", "--cluster", "no-such-cluster"], capture_output=True, text=True
    )
    assert out.returncode == 1 and "no-such-cluster" in out.stderr
