"""The objects create applies once the API server answers: RBAC, the metrics API, the LB controller's role.

Why: two things here are not in any built-in role. The API server's kubelet client must be allowed
``nodes/checkpoint`` — the built-in ``system:kubelet-api-admin`` lacks it (kubernetes issue #126232) — so
it gets ``podhop:kubelet-api-admin``. And metrics-server runs on the host as the user
``system:metrics-server`` (a client certificate, not a service account), so its upstream RBAC
(``manifests/base/rbac.yaml`` of metrics-server v0.8.0) is bound to that user; its APIService points at
a selector-less Service whose Endpoints are the host's bridge address.
"""

from __future__ import annotations

import base64
from typing import Any

import yaml

from podhop.kubekind.layout import METRICS_PORT, KubeLayout


def bootstrap_objects(lay: KubeLayout, ca_pem: bytes) -> list[dict[str, Any]]:
    """RBAC for the API server's kubelet client (with nodes/checkpoint), metrics-server, LB controller."""
    kubelet_resources = [
        "nodes/proxy",
        "nodes/stats",
        "nodes/log",
        "nodes/spec",
        "nodes/metrics",
        "nodes/checkpoint",
    ]
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "podhop:kubelet-api-admin"},
            "rules": [
                {"apiGroups": [""], "resources": kubelet_resources, "verbs": ["*"]},
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch", "proxy"]},
            ],
        },
        _binding("podhop:kubelet-api-admin", "podhop:kubelet-api-admin", "kube-apiserver-kubelet-client"),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {
                "name": "system:aggregated-metrics-reader",
                "labels": {
                    "rbac.authorization.k8s.io/aggregate-to-view": "true",
                    "rbac.authorization.k8s.io/aggregate-to-edit": "true",
                    "rbac.authorization.k8s.io/aggregate-to-admin": "true",
                },
            },
            "rules": [
                {
                    "apiGroups": ["metrics.k8s.io"],
                    "resources": ["pods", "nodes"],
                    "verbs": ["get", "list", "watch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:metrics-server"},
            "rules": [
                {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
                {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["get", "list", "watch"]},
            ],
        },
        _binding("system:metrics-server", "system:metrics-server", "system:metrics-server"),
        _binding("metrics-server:system:auth-delegator", "system:auth-delegator", "system:metrics-server"),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "metrics-server-auth-reader", "namespace": "kube-system"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "extension-apiserver-authentication-reader",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:metrics-server"}
            ],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "metrics-server", "namespace": "kube-system"},
            "spec": {
                "ports": [{"name": "https", "port": 443, "targetPort": METRICS_PORT, "protocol": "TCP"}]
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "metrics-server", "namespace": "kube-system"},
            "subsets": [
                {
                    "addresses": [{"ip": lay.host_ip}],
                    "ports": [{"name": "https", "port": METRICS_PORT, "protocol": "TCP"}],
                }
            ],
        },
        {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {
                "service": {"name": "metrics-server", "namespace": "kube-system", "port": 443},
                "group": "metrics.k8s.io",
                "version": "v1beta1",
                "caBundle": base64.b64encode(ca_pem).decode(),
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "podhop:lb-controller"},
            "rules": [
                {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["services/status"], "verbs": ["get", "patch", "update"]},
            ],
        },
        _binding("podhop:lb-controller", "podhop:lb-controller", "podhop:lb-controller"),
    ]
    return docs


def _binding(name: str, role: str, user: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


def objects_yaml(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)
