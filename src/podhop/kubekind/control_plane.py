"""Pure command lines of the control plane (etcd, API server, controller manager, scheduler,
metrics-server) and the registry's config.

Why: the flags are where the cluster's security lives — TLS with client certificates between every pair,
``Node,RBAC`` authorization with ``NodeRestriction``, the API server's kubelet client identity, the
aggregation layer's front-proxy CA for metrics-server — and they deserve tests without root. Everything
binds to the cluster's bridge address, so clusters never compete for ports.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from podhop.kubekind.layout import (
    API_PORT,
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    KCM_PORT,
    METRICS_PORT,
    REGISTRY_PORT,
    SCHEDULER_PORT,
    KubeLayout,
)


def etcd_argv(lay: KubeLayout, binary: Path) -> list[str]:
    p, ip = lay.pki, lay.host_ip
    return [
        str(binary),
        "--name=etcd",
        f"--data-dir={lay.dir / 'etcd'}",
        f"--listen-client-urls=https://{ip}:{ETCD_CLIENT_PORT}",
        f"--advertise-client-urls=https://{ip}:{ETCD_CLIENT_PORT}",
        f"--listen-peer-urls=https://{ip}:{ETCD_PEER_PORT}",
        f"--initial-advertise-peer-urls=https://{ip}:{ETCD_PEER_PORT}",
        f"--initial-cluster=etcd=https://{ip}:{ETCD_PEER_PORT}",
        "--initial-cluster-state=new",
        f"--cert-file={p / 'etcd.crt'}",
        f"--key-file={p / 'etcd.key'}",
        f"--trusted-ca-file={p / 'ca.crt'}",
        "--client-cert-auth=true",
        f"--peer-cert-file={p / 'etcd.crt'}",
        f"--peer-key-file={p / 'etcd.key'}",
        f"--peer-trusted-ca-file={p / 'ca.crt'}",
        "--peer-client-cert-auth=true",
        "--snapshot-count=10000",
        "--log-level=warn",
    ]


def apiserver_argv(lay: KubeLayout, binary: Path) -> list[str]:
    p, ip = lay.pki, lay.host_ip
    return [
        str(binary),
        f"--advertise-address={ip}",
        f"--bind-address={ip}",
        f"--secure-port={API_PORT}",
        f"--etcd-servers=https://{ip}:{ETCD_CLIENT_PORT}",
        f"--etcd-cafile={p / 'ca.crt'}",
        f"--etcd-certfile={p / 'apiserver-etcd-client.crt'}",
        f"--etcd-keyfile={p / 'apiserver-etcd-client.key'}",
        f"--client-ca-file={p / 'ca.crt'}",
        f"--tls-cert-file={p / 'apiserver.crt'}",
        f"--tls-private-key-file={p / 'apiserver.key'}",
        f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={p / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
        f"--service-account-key-file={p / 'sa.pub'}",
        f"--service-account-signing-key-file={p / 'sa.key'}",
        "--service-account-issuer=https://kubernetes.default.svc",
        f"--service-cluster-ip-range={lay.service_cidr}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        f"--requestheader-client-ca-file={p / 'front-proxy-ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={p / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={p / 'front-proxy-client.key'}",
        "--enable-aggregator-routing=true",
        "--profiling=false",
        "--v=1",
    ]


def controller_manager_argv(lay: KubeLayout, binary: Path) -> list[str]:
    p, kc = lay.pki, str(lay.dir / "controller-manager.kubeconfig")
    return [
        str(binary),
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        f"--bind-address={lay.host_ip}",
        f"--secure-port={KCM_PORT}",
        f"--cert-dir={lay.dir / 'controller-manager'}",
        f"--service-account-private-key-file={p / 'sa.key'}",
        f"--root-ca-file={p / 'ca.crt'}",
        f"--cluster-signing-cert-file={p / 'ca.crt'}",
        f"--cluster-signing-key-file={p / 'ca.key'}",
        f"--service-cluster-ip-range={lay.service_cidr}",
        f"--cluster-name={lay.cluster}",
        "--use-service-account-credentials=true",
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    ]


def scheduler_argv(lay: KubeLayout, binary: Path) -> list[str]:
    kc = str(lay.dir / "scheduler.kubeconfig")
    return [
        str(binary),
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        f"--bind-address={lay.host_ip}",
        f"--secure-port={SCHEDULER_PORT}",
        f"--cert-dir={lay.dir / 'scheduler'}",
        "--leader-elect=false",
        "--profiling=false",
        "--v=1",
    ]


def metrics_server_argv(lay: KubeLayout, binary: Path) -> list[str]:
    p, kc = lay.pki, str(lay.dir / "metrics-server.kubeconfig")
    return [
        str(binary),
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        f"--bind-address={lay.host_ip}",
        f"--secure-port={METRICS_PORT}",
        f"--tls-cert-file={p / 'metrics-server.crt'}",
        f"--tls-private-key-file={p / 'metrics-server.key'}",
        f"--requestheader-client-ca-file={p / 'front-proxy-ca.crt'}",
        f"--kubelet-certificate-authority={p / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
        "--kubelet-use-node-status-port",
        "--metric-resolution=15s",
        "--v=1",
    ]


def registry_config(lay: KubeLayout, storage: Path) -> str:
    """docker-registry 2.8: the cluster's registry, on the bridge address, over shared storage."""
    return yaml.safe_dump(
        {
            "version": 0.1,
            "log": {"level": "warn", "fields": {"service": "registry"}},
            "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
            "http": {"addr": f"{lay.host_ip}:{REGISTRY_PORT}"},
        },
        sort_keys=False,
    )
