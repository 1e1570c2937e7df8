"""A tiny LoadBalancer controller: gives ``type: LoadBalancer`` services an address, like an ELB.

Why: without a cloud provider nothing fills ``status.loadBalancer.ingress``, and
``kubectl get svc`` would show ``<pending>`` forever. This loop (one process per
cluster, started by create, killed by delete) assigns each such service the
lowest free address of the cluster's pool (``10.X.97.0/24``). The host routes
that pool to every node (an ECMP route made at create), and each node's
kube-proxy already DNATs a service's ingress IP to its endpoints once the
status is set, so nothing else is needed for traffic to flow.

It talks to the API server over TLS as ``podhop:lb-controller`` (a client
certificate bound to a role that may only read services and write their status).

A client that connects the moment the address shows (the seed runs ``hey`` right
after ``kubectl get svc``) reaches a node before its kube-proxy has the rules:
that first SYN leaves a conntrack entry *without* DNAT, and every retransmission
of it follows the entry into nowhere until the client gives up (20 s for hey).
So once every node's kube-proxy has programmed a new address, the controller
deletes the nodes' conntrack entries to it that were not translated (reply source
= the address itself): the client's next retransmission is translated and served.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

POLL_S = 1.0
#: How long a new address may wait for the nodes' kube-proxies to program it.
SETTLE_S = 30.0


def pick_addresses(services: list[dict[str, Any]], pool_prefix: str) -> dict[tuple[str, str], str]:
    """Pure: ``(namespace, name) -> address`` for every LoadBalancer service lacking one."""
    used = set()
    for s in services:
        for ing in (s.get("status", {}).get("loadBalancer", {}) or {}).get("ingress", []) or []:
            if ing.get("ip"):
                used.add(ing["ip"])
    free = (f"{pool_prefix}.{n}" for n in range(1, 255) if f"{pool_prefix}.{n}" not in used)
    out: dict[tuple[str, str], str] = {}
    for s in sorted(services, key=lambda s: s["metadata"].get("creationTimestamp", "")):
        if s.get("spec", {}).get("type") != "LoadBalancer":
            continue
        if (s.get("status", {}).get("loadBalancer", {}) or {}).get("ingress"):
            continue
        addr = next(free, None)
        if addr is None:
            break
        out[(s["metadata"]["namespace"], s["metadata"]["name"])] = addr
    return out


class Api:
    def __init__(self, host: str, port: int, pki: Path) -> None:
        self.host, self.port = host, port
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.load_cert_chain(str(pki / "lb-controller.crt"), str(pki / "lb-controller.key"))

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=10)
        try:
            headers = {"Content-Type": "application/merge-patch+json"} if body is not None else {}
            conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            if resp.status >= 300:
                raise OSError(f"{method} {path}: HTTP {resp.status}: {data[:200]!r}")
            parsed: dict[str, Any] = json.loads(data)
            return parsed
        finally:
            conn.close()


def _netns(ns: str, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{ns}", "--", *argv]


def settle(addr: str, netns: list[str], within: float = SETTLE_S) -> bool:
    """Wait (bounded) until every node's kube-proxy has rules for ``addr``, then drop the nodes'
    untranslated conntrack entries to it (see the module doc). True when all nodes were ready."""
    deadline = time.monotonic() + within
    waiting = list(netns)
    while waiting and time.monotonic() < deadline:
        for ns in list(waiting):
            out = subprocess.run(
                _netns(ns, ["iptables-save", "-t", "nat"]), capture_output=True, text=True, timeout=10
            )
            if f"{addr}/32" in out.stdout:
                waiting.remove(ns)
        time.sleep(0.05)
    dropped = []
    if shutil.which("conntrack") is not None:
        for ns in netns:
            out = subprocess.run(
                _netns(ns, ["conntrack", "-D", "--orig-dst", addr, "--reply-src", addr]),
                capture_output=True,
                text=True,
                timeout=10,
            )
            dropped.append(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "")
    print(f"{addr}: programmed on {len(netns) - len(waiting)} of {len(netns)} nodes; {dropped}", flush=True)
    return not waiting


def run(api: Api, pool_prefix: str, cluster_dir: Path, netns: list[str]) -> None:
    while cluster_dir.is_dir():
        try:
            services = api.call("GET", "/api/v1/services")["items"]
            for (ns, name), addr in pick_addresses(services, pool_prefix).items():
                api.call(
                    "PATCH",
                    f"/api/v1/namespaces/{ns}/services/{name}/status",
                    {"status": {"loadBalancer": {"ingress": [{"ip": addr, "ipMode": "VIP"}]}}},
                )
                print(f"{ns}/{name}: {addr}", flush=True)
                threading.Thread(target=settle, args=(addr, netns), daemon=True).start()
        except (OSError, ValueError, KeyError, ssl.SSLError, http.client.HTTPException) as exc:
            print(f"lb-controller: {exc}", file=sys.stderr, flush=True)
        time.sleep(POLL_S)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="podhop-lb-controller")
    ap.add_argument("--cluster-dir", type=Path, required=True)
    ap.add_argument("--api-host", required=True)
    ap.add_argument("--api-port", type=int, required=True)
    ap.add_argument("--pool-prefix", required=True, help="first three octets of the pool, e.g. 10.201.97")
    ap.add_argument("--netns", action="append", default=[], help="a node's network namespace (repeated)")
    args = ap.parse_args(argv)
    api = Api(args.api_host, args.api_port, args.cluster_dir / "pki")
    run(api, args.pool_prefix, args.cluster_dir, args.netns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
