"""Pure rendering of the nodes' files: containerd, kubelet, kube-proxy, CNI, registry hosts, kubeconfigs.

Why: the flags and files are where this kind's knowledge lives (which path keeps
nodes from sharing state, which setting enables restore, which role the API
server's kubelet client needs), and they are worth unit-testing without root.
Nothing here touches the machine: each function turns a layout and a few numbers
into text or argv; ``cluster.py`` writes and runs them.

Traps these settings avoid (see ``docs/kubernetes-kind.md`` for the story):

- Several containerds on one host share ``/run/containerd/runc``, ``/run/containerd/s``,
  ``/var/run/netns`` and NRI's socket unless told otherwise: each node gets its own runc
  root, shim socket directory, netns mount directory (``netns_mounts_under_state_dir``),
  and NRI is off. Kubelets likewise get their own root dir and ``podLogsDir``.
- Kubelet >= 1.35 refuses cgroup v1 unless ``failCgroupV1: false``.
- No ``CAP_SYS_RESOURCE`` here: runc fails ("can't get final child's PID from pipe: EOF") when told to
  lower ``oom_score_adj`` (containerd gives sandboxes -998): ``restrict_oom_score_adj = true``.
- kube-proxy would raise the host-wide ``nf_conntrack_max``: ``conntrack.maxPerCore: 0``.
- No ``br_netfilter`` here, so same-node pod -> service -> pod replies would bypass
  conntrack on the bridge: kube-proxy masquerades all service traffic.
- The built-in ``system:kubelet-api-admin`` lacks ``nodes/checkpoint`` (kubernetes #126232):
  the API server's kubelet client gets ``podhop:kubelet-api-admin`` instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from podhop.kubekind.layout import (
    KUBELET_PORT,
    KubeLayout,
)

PAUSE_IMAGE = "docker.io/podhop/pause:3.10"
#: CRIU options for every dump and restore the nodes' runc runs (``CRIU_CONFIG_FILE`` of containerd):
#: the CRI's checkpoint passes no TCP options, so a pod with open connections (any server under load)
#: would fail with "Connected TCP socket, consider using --tcp-established". A restored pod has a new
#: address, so its connections cannot live on: they are dumped and restored closed (``tcp-close``),
#: and connections still in a listener's accept queue are skipped (``skip-in-flight``).
CRIU_CONF = "tcp-close\nskip-in-flight\n"
#: containerd's CRI runtime plugin (config version 3) and its setting that lets CreateContainer restore
#: a checkpoint image. containerd 2.3 needs it on; 2.1 and 2.2 restore without it; 1.7, 2.0 and 2.4+
#: cannot restore one at all. The kind writes it into its own config; on EKS it is this drop-in, given
#: to nodeadm (``examples/eks/cluster.yaml``, whose test checks it is the same).
CRI_RUNTIME_PLUGIN = "io.containerd.cri.v1.runtime"
RESTORE_SETTING = "enable_experimental_restore_via_create"
CONTAINERD_RESTORE_DROPIN = f'[plugins."{CRI_RUNTIME_PLUGIN}"]\n  {RESTORE_SETTING} = true\n'
CNI_BIN_DIR = "/usr/lib/cni"
RUNC = "/usr/sbin/runc"


@dataclass(frozen=True)
class NodeBudget:
    """What a node may use, and what the machine has (for kubelet's reservations)."""

    cpu_m: int
    memory_b: int
    host_cpu_m: int
    host_memory_b: int

    def reserved(self) -> dict[str, str]:
        """``systemReserved`` that makes the kubelet's allocatable equal the node's budget."""
        cpu = max(0, self.host_cpu_m - self.cpu_m)
        mem = max(0, self.host_memory_b - self.memory_b)
        out = {"memory": f"{mem // 2**20}Mi"}
        if cpu:
            out["cpu"] = f"{cpu}m"
        return out


def _yaml(doc: dict[str, Any] | list[dict[str, Any]]) -> str:
    if isinstance(doc, list):
        return yaml.safe_dump_all(doc, sort_keys=False)
    return yaml.safe_dump(doc, sort_keys=False)


# ----------------------------------------------------------------------------- kubeconfig


def kubeconfig(lay: KubeLayout, user: str, cert: Path, key: Path) -> str:
    """A kubeconfig for ``user`` authenticating with a client certificate."""
    return _yaml(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": lay.cluster,
                    "cluster": {"server": lay.api_url, "certificate-authority": str(lay.pki / "ca.crt")},
                }
            ],
            "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
            "contexts": [{"name": lay.cluster, "context": {"cluster": lay.cluster, "user": user}}],
            "current-context": lay.cluster,
        }
    )


# ----------------------------------------------------------------------------- nodes


def containerd_config(lay: KubeLayout, i: int, cni_conf_dir: Path) -> str:
    """containerd 2.3 (config version 3) for node ``i``: own root, state, sockets; restore on."""
    node, run = lay.node_dir(i), lay.node_run_dir(i)
    sock = lay.containerd_socket(i)
    return f"""\
version = 3
root = "{node / "containerd"}"
state = "{run / "containerd"}"

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.shim.v1.manager"]
  socket_dir = "{lay.shim_socket_dir(i)}"

[plugins."io.containerd.nri.v1.nri"]
  disable = true

[plugins."io.containerd.internal.v1.opt"]
  path = "{node / "opt"}"

[plugins."{CRI_RUNTIME_PLUGIN}"]
  {RESTORE_SETTING} = true
  netns_mounts_under_state_dir = true
  # No CAP_SYS_RESOURCE here: runc cannot lower oom_score_adj (sandboxes get -998), so clamp it.
  restrict_oom_score_adj = true

[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["{CNI_BIN_DIR}"]
  conf_dir = "{cni_conf_dir}"
  max_conf_num = 1

[plugins."io.containerd.cri.v1.runtime".containerd]
  default_runtime_name = "runc"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
  BinaryName = "{RUNC}"
  Root = "{run / "runc"}"
  SystemdCgroup = false

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"

[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "{PAUSE_IMAGE}"

[plugins."io.containerd.cri.v1.images".registry]
  config_path = "{node / "certs.d"}"
"""


def registry_hosts(lay: KubeLayout) -> dict[str, str]:
    """``certs.d/<host>/hosts.toml``: docker.io and the registry itself, plain HTTP, no internet."""
    url = f"http://{lay.registry}"
    mirror = f'server = "{url}"\n\n[host."{url}"]\n  capabilities = ["pull", "resolve"]\n'
    return {
        "docker.io": mirror,
        lay.registry: mirror.replace('["pull", "resolve"]', '["pull", "resolve", "push"]'),
    }


def cni_network_name(lay: KubeLayout) -> str:
    return f"podhop-k{lay.idx}"


def cni_conflist(lay: KubeLayout, i: int) -> str:
    """bridge + host-local (state under the node's directory) + portmap."""
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": cni_network_name(lay),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cbr0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": lay.pod_cidr(i), "gateway": lay.pod_gateway(i)}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(lay.node_dir(i) / "cni" / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


def kubelet_config(lay: KubeLayout, i: int, budget: NodeBudget) -> str:
    p, name = lay.pki, lay.node_name(i)
    return _yaml(
        {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": lay.node_ip(i),
            "port": KUBELET_PORT,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": 10248,
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True, "cacheTTL": "30s"},
                "x509": {"clientCAFile": str(p / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(p / f"kubelet-{name}-serving.crt"),
            "tlsPrivateKeyFile": str(p / f"kubelet-{name}-serving.key"),
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": "/" + lay.node_cgroup(i),
            "cgroupsPerQOS": True,
            "failCgroupV1": False,
            "failSwapOn": False,
            "containerRuntimeEndpoint": f"unix://{lay.containerd_socket(i)}",
            "podLogsDir": str(lay.node_dir(i) / "pod-logs"),
            "featureGates": {"ContainerCheckpoint": True},
            "systemReserved": budget.reserved(),
            "enforceNodeAllocatable": ["pods"],
            "evictionHard": {
                "memory.available": "50Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 99,
            "imageGCLowThresholdPercent": 98,
            "serializeImagePulls": False,
            "resolvConf": "/etc/resolv.conf",
            "clusterDomain": "cluster.local",
            "maxPods": 110,
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "nodeStatusReportFrequency": "10s",
            "runtimeRequestTimeout": "5m",
        }
    )


#: Marks a node whose kubelet reports the whole host as the node (all the kind's kubelets share the
#: host's root cgroup): podhop then counts the node's usage as the sum of its pods'.
SHARED_HOST_LABEL = "podhop.io/shared-host"  # = backends.kubernetes.usage.SHARED_HOST


def kubelet_argv(lay: KubeLayout, i: int, binary: Path) -> list[str]:
    node = lay.node_dir(i)
    return [
        str(binary),
        f"--config={node / 'kubelet.yaml'}",
        f"--kubeconfig={node / 'kubelet.kubeconfig'}",
        f"--root-dir={lay.kubelet_root(i)}",
        f"--cert-dir={node / 'kubelet-pki'}",
        f"--hostname-override={lay.node_name(i)}",
        f"--node-ip={lay.node_ip(i)}",
        # cAdvisor reads usage every second (default 10 s), so that `top` and the experiments'
        # 1-s samples see each second's load.
        "--housekeeping-interval=1s",
        f"--node-labels={SHARED_HOST_LABEL}=true",  # its usage figure is the host's (see usage.py)
        "--v=1",
    ]


def containerd_argv(lay: KubeLayout, i: int, binary: Path) -> list[str]:
    return [str(binary), f"--config={lay.node_dir(i) / 'containerd.toml'}"]


def kube_proxy_config(lay: KubeLayout, i: int) -> str:
    return _yaml(
        {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(lay.dir / "kube-proxy.kubeconfig")},
            "mode": "iptables",
            "clusterCIDR": lay.cluster_cidr,
            "hostnameOverride": lay.node_name(i),
            "bindAddress": lay.node_ip(i),
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            "iptables": {"masqueradeAll": True},
            "nodePortAddresses": [f"{lay.node_ip(i)}/32"],
        }
    )


def kube_proxy_argv(lay: KubeLayout, i: int, binary: Path) -> list[str]:
    return [str(binary), f"--config={lay.node_dir(i) / 'kube-proxy.yaml'}", "--v=1"]


def containerd_config_sample() -> str:
    """A node's containerd config as create writes it (for the doctor: is restore on?)."""
    from podhop.settings import Paths

    return containerd_config(KubeLayout("doctor", 0, Paths(Path("/x"), Path("/y"))), 1, Path("/cni"))
