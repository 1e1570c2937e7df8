"""Service virtual IPs the way kube-proxy's iptables mode makes them.

Why: a Service is a virtual IP that no interface owns; the host's NAT table
turns each new connection to ``VIP:port`` into a connection to one ready
endpoint, chosen with the ``statistic`` match in random mode so that endpoint
*i* of *n* is picked with probability 1/(n-i) among those left — exactly
kube-proxy's chain layout (``KUBE-SERVICES`` → ``KUBE-SVC-*`` → ``KUBE-SEP-*``).

All of a cluster's chains carry the cluster's prefix and are rewritten in one
``iptables-restore --noflush`` call, so an update is atomic, cheap, and never
touches rules that are not ours. LoadBalancer services are also published on
``127.0.0.1:PORT``: that needs ``route_localnet`` on the cluster bridge and a
masquerade of loopback sources, as kube-proxy does for NodePorts on localhost.

As with kube-proxy, the same rules are installed on every node (its network
namespace) and on the host: a pod's call to a service is translated by its own
node, the host's OUTPUT chain translates the host's calls. Pods of a node
share an L2 bridge and there is no ``br_netfilter`` here, so a reply from a
same-node endpoint would bypass the node's conntrack; service traffic is
therefore always masqueraded (kube-proxy's ``--masquerade-all``), and
endpoints see their node's address as the client.

On the host, service traffic is translated to source addresses of its own
(:class:`HostSources`: one for calls to VIPs, one for LoadBalancer calls on
127.0.0.1), never the bridge address the host's direct calls to pods leave
from. Measured (issue 9): with one shared source, a service connection and a
direct one that happen to use the same client port have the same reply tuple
at the endpoint, so NAT moves one of them to another port; the pod's
``TIME_WAIT`` socket on that 4-tuple then belongs to another client socket,
whose initial sequence number and TCP timestamp offset are unrelated (this
kernel randomises both per connection), so about half of such SYNs fail the
PAWS check and are dropped (the pod's ``TcpExtPAWSTimewait`` counted exactly
the client's ``TcpExtTCPSynRetrans``), each costing the client a 1 s SYN
retransmission. Keeping source ports unchanged is what makes ``TIME_WAIT``
reuse safe: the endpoint's 4-tuple then always stands for one client 4-tuple.
For the same reason ``--random-fully`` (kube-proxy's answer to simultaneous
port races, which do not happen here: ``insert_failed`` stays 0) and masquerade
port ranges outside the ephemeral range were measured and made it worse: they
remap every connection.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from podhop import sh
from podhop.errors import CommandError

MASQ_MARK = "0x4000/0x4000"


@dataclass(frozen=True)
class HostSources:
    """The host's own source addresses for service traffic, and the interface that owns them."""

    device: str
    service: str  # masqueraded calls to a VIP
    loopback: str  # masqueraded calls to a LoadBalancer port on 127.0.0.1


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int


@dataclass(frozen=True)
class ServiceRule:
    """One service port: its VIP, optional loopback port, and ready endpoints."""

    key: str  # "namespace/name:port", stable across syncs
    vip: str
    port: int
    endpoints: tuple[Endpoint, ...] = ()
    external_port: int | None = None
    protocol: str = "tcp"


def _chain(prefix: str, kind: str, key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()[:10].upper()
    return f"{prefix}-{kind}-{digest}"


def _hooks(prefix: str, out_dev: str | None) -> list[tuple[str, str, list[str]]]:
    """(table, chain, rule) triples that send traffic into this cluster's chains.

    ``out_dev`` limits the masquerade hook to one interface (the host's
    cluster bridge); None masquerades marked traffic leaving any interface.
    """
    comment = ["-m", "comment", "--comment", f"podhop {prefix}"]
    out = ["-o", out_dev] if out_dev else []
    return [
        ("nat", "OUTPUT", [*comment, "-j", f"{prefix}-SERVICES"]),
        ("nat", "PREROUTING", [*comment, "-j", f"{prefix}-SERVICES"]),
        ("nat", "POSTROUTING", [*comment, *out, "-j", f"{prefix}-POSTROUTING"]),
        ("filter", "OUTPUT", [*comment, "-j", f"{prefix}-NOENDPOINTS"]),
        ("filter", "FORWARD", [*comment, "-j", f"{prefix}-NOENDPOINTS"]),
    ]


def render(
    prefix: str,
    rules: list[ServiceRule],
    existing: dict[str, set[str]],
    sources: HostSources | None = None,
) -> str:
    """The ``iptables-restore`` input that makes our chains equal ``rules``.

    ``existing`` maps a table to the chain names with our prefix now present;
    those no longer needed are flushed and deleted in the same transaction.
    Services without endpoints are rejected in the filter table (as kube-proxy
    does), so clients fail at once instead of waiting for a timeout. With
    ``sources`` (the host) service traffic is translated to those addresses
    rather than masqueraded to the interface's own.
    """
    nat_chains: list[str] = [f"{prefix}-SERVICES", f"{prefix}-POSTROUTING"]
    if sources is None:
        nat: list[str] = [
            f"-A {prefix}-POSTROUTING -m mark --mark {MASQ_MARK} -j MASQUERADE",
            f"-A {prefix}-POSTROUTING -s 127.0.0.0/8 -j MASQUERADE",
        ]
    else:  # loopback first: LoadBalancer calls are marked too
        nat = [
            f"-A {prefix}-POSTROUTING -s 127.0.0.0/8 -j SNAT --to-source {sources.loopback}",
            f"-A {prefix}-POSTROUTING -m mark --mark {MASQ_MARK} -j SNAT --to-source {sources.service}",
        ]
    noep = f"{prefix}-NOENDPOINTS"
    filt: list[str] = []
    for rule in rules:
        svc = _chain(prefix, "SVC", rule.key)
        match = f"-p {rule.protocol} -m {rule.protocol}"
        note = f'-m comment --comment "{rule.key}"'
        dests = [(rule.vip, rule.port)]
        if rule.external_port is not None:
            dests.append(("127.0.0.1", rule.external_port))
        if not rule.endpoints:
            filt += [f"-A {noep} -d {ip}/32 {match} --dport {port} {note} -j REJECT" for ip, port in dests]
            continue
        nat_chains.append(svc)
        nat.append(f"-A {svc} -j MARK --set-xmark {MASQ_MARK}")
        nat += [
            f"-A {prefix}-SERVICES -d {ip}/32 {match} --dport {port} {note} -j {svc}" for ip, port in dests
        ]
        n = len(rule.endpoints)
        for i, ep in enumerate(rule.endpoints):
            sep = _chain(prefix, "SEP", f"{rule.key}/{ep.ip}:{ep.port}")
            nat_chains.append(sep)
            left = n - i
            if left > 1:
                nat.append(f"-A {svc} -m statistic --mode random --probability {1 / left:.10f} -j {sep}")
            else:
                nat.append(f"-A {svc} -j {sep}")
            nat.append(f"-A {sep} {match} -j DNAT --to-destination {ep.ip}:{ep.port}")
    out: list[str] = []
    for table, chains, lines in (("filter", [noep], filt), ("nat", nat_chains, nat)):
        stale = sorted(existing.get(table, set()) - set(chains))
        out.append(f"*{table}")
        out += [f":{c} - [0:0]" for c in [*chains, *stale]]
        out += lines
        out += [f"-X {c}" for c in stale]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def _in(netns: str | None, argv: list[str]) -> list[str]:
    return (["ip", "netns", "exec", netns] if netns else []) + argv


def our_chains(prefix: str, netns: str | None = None) -> dict[str, set[str]]:
    """Chains with our prefix, per table."""
    found: dict[str, set[str]] = {}
    for table in ("filter", "nat"):
        out = sh.run(_in(netns, ["iptables", "-w", "-t", table, "-S"])).stdout
        found[table] = {
            ln.split()[1]
            for ln in out.splitlines()
            if ln.startswith("-N ") and ln.split()[1].startswith(prefix + "-")
        }
    return found


def install_hooks(prefix: str, out_dev: str | None, netns: str | None = None) -> None:
    """Create our base chains and jump to them from the hooks of ``netns`` (idempotent)."""
    sync(prefix, [], netns)
    for table, chain, rule in _hooks(prefix, out_dev):
        if not sh.ok(_in(netns, ["iptables", "-w", "-t", table, "-C", chain, *rule])):
            sh.run(_in(netns, ["iptables", "-w", "-t", table, "-I", chain, "1", *rule]))


def ensure_addresses(sources: HostSources) -> None:
    """Give ``sources.device`` the host's service source addresses (/32, idempotent).

    They live on the cluster bridge, so deleting the cluster removes them with it; checked on every
    sync (one ``ip`` call), since a bridge of the same name may have been deleted and made again."""
    shown = sh.run(["ip", "-4", "-o", "addr", "show", "dev", sources.device]).stdout
    for ip in (sources.service, sources.loopback):
        if f" {ip}/" not in shown:
            sh.run(["ip", "addr", "add", f"{ip}/32", "dev", sources.device])


def sync(
    prefix: str, rules: list[ServiceRule], netns: str | None = None, sources: HostSources | None = None
) -> None:
    """Make the cluster's service chains in ``netns`` match ``rules`` in one atomic transaction
    (on the host, with ``sources``: its service source addresses, added first if missing)."""
    if sources is not None:
        ensure_addresses(sources)
    text = render(prefix, rules, our_chains(prefix, netns), sources)
    sh.run(_in(netns, ["iptables-restore", "-w", "--noflush"]), input=text)


class PreparedRestore:
    """An ``iptables-restore --noflush`` started ahead of time that applies one transaction later.

    iptables-nft commits each table at its ``COMMIT`` line, so the process can wait on its input
    until the moment the rules must change: the change then costs the commit alone (~1 ms here)
    instead of a process start and two listings (``our_chains``, ~10 ms). A migration's switch uses
    one per namespace (the host's first); a regular :func:`sync` later removes the chains it left.
    """

    def __init__(self, netns: str | None = None) -> None:
        self.argv = _in(netns, ["iptables-restore", "-w", "--noflush"])
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def apply(self, prefix: str, rules: list[ServiceRule], sources: HostSources | None = None) -> None:
        """Make our chains carry ``rules`` (chains no longer used stay until the next :func:`sync`)."""
        assert self.proc.stdin is not None and self.proc.stderr is not None
        try:
            self.proc.stdin.write(render(prefix, rules, {}, sources))
            self.proc.stdin.close()
        except OSError as exc:
            raise CommandError(self.argv, -1, f"iptables-restore is gone: {exc}") from exc
        err = self.proc.stderr.read()
        if self.proc.wait(timeout=30) != 0:
            raise CommandError(self.argv, self.proc.returncode, err)

    def close(self) -> None:
        """Not needed after all: the process ends without changing anything."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def forget_connections(address: str, netns: str | None = None) -> None:
    """Delete ``netns``'s conntrack entries whose replies come from ``address`` (an endpoint gone).

    kube-proxy does this for UDP only; here TCP needs it too. A client's connections that were
    being made while the endpoint was frozen or being removed stay in conntrack (established, or
    half-open) for minutes, translated to the gone address; a later connection from the same
    client port matches such an entry (the kernel picks ports near the last ones for a
    destination) and its SYN follows the old translation into nowhere: a 1 s retransmission, or
    a timeout, well after the switch."""
    sh.run(_in(netns, ["conntrack", "-D", "-r", address]), check=False)


def remove_all(prefix: str, out_dev: str | None, netns: str | None = None) -> None:
    """Remove our hooks and every chain with our prefix. Idempotent."""
    for table, chain, rule in _hooks(prefix, out_dev):
        while sh.ok(_in(netns, ["iptables", "-w", "-t", table, "-C", chain, *rule])):
            sh.run(_in(netns, ["iptables", "-w", "-t", table, "-D", chain, *rule]))
    text = ""
    for table, chains in our_chains(prefix, netns).items():
        if chains:
            text += f"*{table}\n" + "".join(f":{c} - [0:0]\n" for c in chains)
            text += "".join(f"-X {c}\n" for c in chains) + "COMMIT\n"
    if text:
        sh.run(_in(netns, ["iptables-restore", "-w", "--noflush"]), input=text)


def guard_port(netns: str | None, address: str, port: int, allowed: str) -> Callable[[], None]:
    """Reset TCP connections to ``address:port`` in ``netns`` from anyone but ``allowed``; return the undo.

    Migrations use it for the CRIU page server of one move: only the other node may connect.
    """
    rule = ["-p", "tcp", "-d", f"{address}/32", "--dport", str(port), "!", "-s", f"{allowed}/32"]
    rule += ["-m", "comment", "--comment", "podhop migration", "-j", "REJECT", "--reject-with", "tcp-reset"]
    sh.run(_nsenter(netns, ["iptables", "-w", "-I", "INPUT", "1", *rule]))

    def undo() -> None:
        sh.ok(_nsenter(netns, ["iptables", "-w", "-D", "INPUT", *rule]))

    return undo


def _nsenter(netns: str | None, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net=/var/run/netns/{netns}", "--", *argv] if netns else argv


def leftover_rules(prefix: str) -> list[str]:
    """Every host rule or chain, in any table we use, that mentions our prefix (for residue checks)."""
    left = []
    for table in ("filter", "nat"):
        out = sh.run(["iptables", "-w", "-t", table, "-S"]).stdout
        left += [f"{table}: {ln}" for ln in out.splitlines() if prefix + "-" in ln]
    return left
