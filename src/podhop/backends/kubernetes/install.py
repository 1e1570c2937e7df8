"""What ``podhop kube manifests`` prints: the node agent's objects and the RBAC a podhop user needs.

Why a generator and not a static file: the agent's image, its token and the
host paths differ between clusters. On EKS (the default) each node has one
containerd at ``/run/containerd/containerd.sock`` and the kubelet root
``/var/lib/kubelet``; on podhop's ``--kind kubernetes`` every node of the host
has its own socket and kubelet root under one parent directory, so the
DaemonSet mounts that parent and lets the kubelet pick the node's own entry
with ``subPathExpr: $(NODE_NAME)/…`` (the downward API) — the agent then sees
the same paths as on EKS. Everything else is the same on both.

Least privilege, and why each privilege is there, is written next to it in the
YAML itself (comments), since that is what an operator reviews. The agent has
no API access at all (no token mounted, no role): podhop talks to it, it never
talks to the API server. This module is pure (no client, no I/O) so that the
CLI, the kind's ``cluster create`` and the tests share one source.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

NAMESPACE = "podhop-system"
SECRET = "podhop-agent"
NAME = "podhop-agent"
LABEL_KEY = "app.kubernetes.io/name"
LABEL = f"{LABEL_KEY}={NAME}"
PORT = 10290
USER_ROLE = "podhop-user"
USER_GROUP = "podhop-users"
DEFAULT_IMAGE = "docker.io/podhop/agent:latest"


@dataclass(frozen=True)
class HostPaths:
    """Where the node's containerd socket and the kubelet's checkpoint directory are on the host.

    ``*_host`` is the hostPath; ``*_subpath`` (optional) a ``subPathExpr`` below it, in which
    ``$(NODE_NAME)`` is the node's name. EKS (the default) needs no subpath.
    """

    socket_host: str = "/run/containerd/containerd.sock"
    socket_subpath: str = ""
    checkpoints_host: str = "/var/lib/kubelet/checkpoints"
    checkpoints_subpath: str = ""


EKS = HostPaths()


def kind_paths(nodes_run_dir: str, nodes_data_dir: str) -> HostPaths:
    """podhop's kind: ``<run>/k8s/<c>/nodes/<node>/containerd.sock``, ``<data>/…/nodes/<node>/kubelet``."""
    return HostPaths(
        socket_host=nodes_run_dir,
        socket_subpath="$(NODE_NAME)/containerd.sock",
        checkpoints_host=nodes_data_dir,
        checkpoints_subpath="$(NODE_NAME)/kubelet/checkpoints",
    )


def new_token() -> str:
    return secrets.token_hex(32)


def _q(value: str) -> str:
    """A YAML scalar (JSON strings are valid YAML)."""
    return json.dumps(value)


def _mount(name: str, path: str, subpath: str, read_only: bool) -> str:
    out = f"            - name: {name}\n              mountPath: {_q(path)}\n"
    if subpath:
        out += f"              subPathExpr: {_q(subpath)}\n"
    if read_only:
        out += "              readOnly: true\n"
    return out


def agent_yaml(image: str, token: str, paths: HostPaths = EKS, pull_policy: str = "IfNotPresent") -> str:
    """Namespace, Secret, ServiceAccount and DaemonSet of the node agent, with the reasons as comments."""
    socket_type = "Directory" if paths.socket_subpath else "Socket"
    ckpt_type = "Directory" if paths.checkpoints_subpath else "DirectoryOrCreate"
    return f"""\
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
  labels:
    # The agent uses hostNetwork and hostPath (see the DaemonSet), which only the privileged
    # Pod Security level admits; nothing else runs in this namespace.
    pod-security.kubernetes.io/enforce: privileged
---
apiVersion: v1
kind: Secret
metadata:
  name: {SECRET}
  namespace: {NAMESPACE}
type: Opaque
data:
  # Every request to an agent carries it (X-Podhop-Token); podhop reads it with `secrets get`.
  token: {_q(_b64(token))}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {NAME}
  namespace: {NAMESPACE}
# The agent never calls the API server: no token is mounted and no role is bound to it.
automountServiceAccountToken: false
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {NAME}
  namespace: {NAMESPACE}
  labels:
    {LABEL_KEY}: {NAME}
spec:
  selector:
    matchLabels:
      {LABEL_KEY}: {NAME}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 1
  template:
    metadata:
      labels:
        {LABEL_KEY}: {NAME}
    spec:
      serviceAccountName: {NAME}
      automountServiceAccountToken: false
      # hostNetwork: a received archive comes straight from the source node's agent to this node's
      # address (the receive admits only that peer), and podhop reaches the agent at the node's
      # address through the API server's pod proxy — no Service, no pod network needed.
      hostNetwork: true
      dnsPolicy: Default  # the node's resolver: the agent looks no names up anyway
      # Every node may be a migration's source or target, tainted ones too.
      tolerations:
        - operator: Exists
      terminationGracePeriodSeconds: 5
      containers:
        - name: agent
          image: {_q(image)}
          imagePullPolicy: {pull_policy}
          args:
            - --containerd-socket=/run/containerd/containerd.sock
            - --checkpoint-dir=/var/lib/kubelet/checkpoints
            - --work-dir=/tmp/podhop-agent
          env:
            - name: NODE_NAME
              valueFrom:
                fieldRef:
                  fieldPath: spec.nodeName
            - name: NODE_IP
              valueFrom:
                fieldRef:
                  fieldPath: status.hostIP
            - name: PODHOP_TOKEN_FILE
              value: /etc/podhop-agent/token
            - name: PODHOP_AGENT_PORT
              value: "{PORT}"
          ports:
            - name: api
              containerPort: {PORT}
              protocol: TCP
          # The agent listens only once it has reached containerd and found the checkpoint directory.
          readinessProbe:
            tcpSocket:
              port: {PORT}
            periodSeconds: 1
          resources:
            requests:
              cpu: 10m
              memory: 32Mi
            limits:
              memory: 256Mi
          securityContext:
            # root (uid 0): containerd's socket and the kubelet's checkpoints (0600) belong to root.
            # No capability is needed beyond being their owner, so all are dropped; not privileged.
            runAsUser: 0
            runAsGroup: 0
            privileged: false
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
            seccompProfile:
              type: RuntimeDefault
          volumeMounts:
            # containerd's socket: to import checkpoint images (namespace k8s.io) and to pause, resume
            # or kill a container's task for a cold migration. This is the agent's real power on the
            # node, which is why every request must carry the token.
{_mount("containerd-socket", "/run/containerd/containerd.sock", paths.socket_subpath, False)}\
            # The kubelet's checkpoint directory only (not the kubelet root): archives are read, sent
            # and deleted there.
{_mount("checkpoints", "/var/lib/kubelet/checkpoints", paths.checkpoints_subpath, False)}\
            - name: token
              mountPath: /etc/podhop-agent
              readOnly: true
            # Received archives are staged here (0700) until they are a checkpoint image.
            - name: work
              mountPath: /tmp
      volumes:
        - name: containerd-socket
          hostPath:
            path: {_q(paths.socket_host)}
            type: {socket_type}
        - name: checkpoints
          hostPath:
            path: {_q(paths.checkpoints_host)}
            type: {ckpt_type}
        - name: token
          secret:
            secretName: {SECRET}
            defaultMode: 0400
        - name: work
          emptyDir:
            sizeLimit: 16Gi
"""


def user_rbac_yaml(group: str = USER_GROUP) -> str:
    """The ClusterRole (and the Role in podhop-system) a podhop user needs, bound to ``group``."""
    return f"""\
# What podhop does as its user, verb by verb. Bind it to your own users/groups as you like.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {USER_ROLE}
rules:
  # Reading the cluster (get, top), creating the restored pod, moving labels and the deletion cost
  # for ReplicaSet adoption (patch), removing the source pod.
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["create", "get", "list", "delete", "patch"]
  # A clone's source is marked not Ready before it goes, so that no Service sends it new
  # connections while it stops (see backends/kubernetes/endpoints.py); the slices say when.
  - apiGroups: [""]
    resources: ["pods/status"]
    verbs: ["patch"]
  - apiGroups: ["discovery.k8s.io"]
    resources: ["endpointslices"]
    verbs: ["list"]
  - apiGroups: [""]
    resources: ["nodes"]
    verbs: ["get", "list"]
  # The kubelet's checkpoint API (POST .../proxy/checkpoint/...) and its resource metrics (GET).
  - apiGroups: [""]
    resources: ["nodes/proxy"]
    verbs: ["create", "get"]
  # The probe's target and which Service selects a pod.
  - apiGroups: [""]
    resources: ["services"]
    verbs: ["list"]
  - apiGroups: [""]
    resources: ["pods/log"]
    verbs: ["get"]
  # podhop exec: websocket upgrades are GETs on older API servers, "create" on newer ones.
  - apiGroups: [""]
    resources: ["pods/exec"]
    verbs: ["create", "get"]
  - apiGroups: ["metrics.k8s.io"]
    resources: ["pods", "nodes"]
    verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {USER_ROLE}
  namespace: {NAMESPACE}
rules:
  # The agent's token, and nothing else in the namespace's secrets.
  - apiGroups: [""]
    resources: ["secrets"]
    resourceNames: ["{SECRET}"]
    verbs: ["get"]
  # Finding the agents, and talking to them through the API server's pod proxy: the proxy's verb is
  # the request's, and the agent's DELETEs (a sent archive, a checkpoint image, a receive) are a
  # migration's cleanup.
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["list", "get"]
  - apiGroups: [""]
    resources: ["pods/proxy"]
    verbs: ["create", "get", "delete"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: {USER_ROLE}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {USER_ROLE}
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: Group
    name: {_q(group)}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {USER_ROLE}
  namespace: {NAMESPACE}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {USER_ROLE}
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: Group
    name: {_q(group)}
"""


def manifests(
    image: str = DEFAULT_IMAGE,
    token: str | None = None,
    paths: HostPaths = EKS,
    *,
    user_rbac: bool = True,
    group: str = USER_GROUP,
) -> str:
    """Everything, as one multi-document YAML stream."""
    text = agent_yaml(image, token or new_token(), paths)
    if user_rbac:
        text += "---\n" + user_rbac_yaml(group)
    return text


def objects(text: str) -> list[dict[str, Any]]:
    """The documents of a manifest stream as dicts (for checks)."""
    import yaml

    return [d for d in yaml.safe_load_all(text) if d]


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()
