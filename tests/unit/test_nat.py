"""The iptables-restore text that implements Services, kube-proxy style."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess

import pytest

from podhop.net.nat import Endpoint, HostSources, ServiceRule, render

PREFIX = "PH7"


def _sections(text: str) -> dict[str, list[str]]:
    """Table name -> its lines (without the ``*table`` header and ``COMMIT``)."""
    out: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("*"):
            assert current is None, "a table starts before the previous one is committed"
            current = line[1:]
            assert current not in out
            out[current] = []
        elif line == "COMMIT":
            assert current is not None, "COMMIT outside a table"
            current = None
        else:
            assert current is not None, f"line outside a table: {line!r}"
            out[current].append(line)
    assert current is None, "the last table is not committed"
    return out


def _declared(lines: list[str]) -> list[str]:
    return [ln[1:].split()[0] for ln in lines if ln.startswith(":")]


def _deleted(lines: list[str]) -> list[str]:
    return [ln.split()[1] for ln in lines if ln.startswith("-X ")]


def _rules(lines: list[str], chain: str) -> list[list[str]]:
    return [shlex.split(ln)[2:] for ln in lines if ln.startswith(f"-A {chain} ")]


def _opt(rule: list[str], flag: str) -> str | None:
    return rule[rule.index(flag) + 1] if flag in rule else None


def _service_chain(nat: list[str], vip: str, port: int) -> str:
    jumps = [
        r for r in _rules(nat, f"{PREFIX}-SERVICES")
        if _opt(r, "-d") == f"{vip}/32" and _opt(r, "--dport") == str(port)
    ]
    assert len(jumps) == 1, jumps
    target = _opt(jumps[0], "-j")
    assert target is not None
    return target


def _endpoints(n: int) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(f"10.207.{1 + i // 200}.{2 + i % 200}", 8080) for i in range(n))


def _rule(n: int, **kw: object) -> ServiceRule:
    return ServiceRule(key="default/web:80", vip="10.207.250.10", port=80, endpoints=_endpoints(n), **kw)  # type: ignore[arg-type]


def test_sections_and_commit() -> None:
    text = render(PREFIX, [_rule(2)], {})
    assert text.endswith("COMMIT\n")
    lines = text.splitlines()
    assert lines[0] == "*filter"
    assert lines.count("COMMIT") == 2
    assert lines.index("*nat") > lines.index("COMMIT")
    sections = _sections(text)
    assert set(sections) == {"filter", "nat"}
    assert f"{PREFIX}-NOENDPOINTS" in _declared(sections["filter"])
    assert {f"{PREFIX}-SERVICES", f"{PREFIX}-POSTROUTING"} <= set(_declared(sections["nat"]))


def test_empty_rules_still_make_base_chains() -> None:
    sections = _sections(render(PREFIX, [], {}))
    assert _declared(sections["filter"]) == [f"{PREFIX}-NOENDPOINTS"]
    assert set(_declared(sections["nat"])) == {f"{PREFIX}-SERVICES", f"{PREFIX}-POSTROUTING"}
    assert not _rules(sections["nat"], f"{PREFIX}-SERVICES")
    # loopback sources (LoadBalancer on 127.0.0.1) and marked hairpin traffic are masqueraded
    post = _rules(sections["nat"], f"{PREFIX}-POSTROUTING")
    assert any(_opt(r, "-s") == "127.0.0.0/8" and _opt(r, "-j") == "MASQUERADE" for r in post)
    assert any("--mark" in r and _opt(r, "-j") == "MASQUERADE" for r in post)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 10, 16, 33, 100])
def test_endpoint_selection_is_uniform(n: int) -> None:
    nat = _sections(render(PREFIX, [_rule(n)], {}))["nat"]
    svc = _service_chain(nat, "10.207.250.10", 80)
    rules = _rules(nat, svc)
    jumps = [r for r in rules if (_opt(r, "-j") or "").startswith(f"{PREFIX}-SEP-")]
    assert len(jumps) == n
    # anything else in the service chain must not end the traversal (e.g. a MARK for masquerading)
    for r in rules:
        if r not in jumps:
            assert _opt(r, "-j") in ("MARK", "CONNMARK"), r
    probabilities: list[float] = []
    for i, rule in enumerate(jumps):
        left = n - i
        if left > 1:
            assert rule[:4] == ["-m", "statistic", "--mode", "random"], rule
            p = float(rule[rule.index("--probability") + 1])
            assert p == pytest.approx(1 / left, abs=1e-9)
            probabilities.append(p)
        else:
            assert "statistic" not in rule, "the last endpoint must catch everything left"
            probabilities.append(1.0)
    # chance that each endpoint is picked: it is reached (all earlier ones missed) and matches
    reach = 1.0
    chosen = []
    for p in probabilities:
        chosen.append(reach * p)
        reach *= 1 - p
    assert reach == pytest.approx(0.0, abs=1e-9)
    for c in chosen:
        assert c == pytest.approx(1 / n, abs=1e-9)

    # every endpoint gets its own chain, which DNATs to exactly that endpoint
    seps = [_opt(r, "-j") for r in jumps]
    assert len(set(seps)) == n
    for sep, ep in zip(seps, _endpoints(n), strict=True):
        assert sep is not None
        dnat = [r for r in _rules(nat, sep) if _opt(r, "-j") == "DNAT"]
        assert len(dnat) == 1
        assert _opt(dnat[0], "--to-destination") == f"{ep.ip}:{ep.port}"
        assert _opt(dnat[0], "-p") == "tcp"


def test_service_without_endpoints_is_rejected_not_dnatted() -> None:
    sections = _sections(render(PREFIX, [_rule(0)], {}))
    rejects = _rules(sections["filter"], f"{PREFIX}-NOENDPOINTS")
    assert len(rejects) == 1
    assert _opt(rejects[0], "-d") == "10.207.250.10/32"
    assert _opt(rejects[0], "--dport") == "80"
    assert _opt(rejects[0], "-j") == "REJECT"
    nat = sections["nat"]
    assert not _rules(nat, f"{PREFIX}-SERVICES")
    assert not any("DNAT" in ln for ln in nat)
    assert not any("-SVC-" in c or "-SEP-" in c for c in _declared(nat))


def test_service_with_endpoints_is_not_rejected() -> None:
    sections = _sections(render(PREFIX, [_rule(2)], {}))
    assert not _rules(sections["filter"], f"{PREFIX}-NOENDPOINTS")
    assert not any("REJECT" in ln for ln in sections["filter"])


def test_load_balancer_is_also_published_on_loopback() -> None:
    nat = _sections(render(PREFIX, [_rule(2, external_port=30080)], {}))["nat"]
    svc = _service_chain(nat, "10.207.250.10", 80)
    assert _service_chain(nat, "127.0.0.1", 30080) == svc


def test_cluster_ip_service_is_not_published_on_loopback() -> None:
    text = render(PREFIX, [_rule(2)], {})
    assert "127.0.0.1" not in text


def test_load_balancer_without_endpoints_rejects_both_addresses() -> None:
    sections = _sections(render(PREFIX, [_rule(0, external_port=30080)], {}))
    rejects = _rules(sections["filter"], f"{PREFIX}-NOENDPOINTS")
    dests = {(_opt(r, "-d"), _opt(r, "--dport")) for r in rejects}
    assert dests == {("10.207.250.10/32", "80"), ("127.0.0.1/32", "30080")}
    assert all(_opt(r, "-j") == "REJECT" for r in rejects)


def test_udp_service_matches_udp() -> None:
    nat = _sections(render(PREFIX, [_rule(1, protocol="udp")], {}))["nat"]
    jump = _rules(nat, f"{PREFIX}-SERVICES")[0]
    assert _opt(jump, "-p") == "udp"
    assert "tcp" not in " ".join(nat)


def test_several_services_get_separate_chains() -> None:
    rules = [
        ServiceRule("default/web:80", "10.207.250.10", 80, _endpoints(2)),
        ServiceRule("default/web:443", "10.207.250.10", 443, _endpoints(2)),
        ServiceRule("other/web:80", "10.207.250.11", 80, _endpoints(1)),
    ]
    nat = _sections(render(PREFIX, rules, {}))["nat"]
    chains = {_service_chain(nat, r.vip, r.port) for r in rules}
    assert len(chains) == 3
    declared = _declared(nat)
    assert len(declared) == len(set(declared)), "a chain is declared twice"
    # chain names are stable across syncs (hash of the key), so updates are minimal
    assert _sections(render(PREFIX, rules, {}))["nat"] == nat


def test_chain_names_fit_iptables_limit() -> None:
    rules = [
        ServiceRule(f"namespace-{i}/service-{i}:{i}", "10.249.250.10", i, _endpoints(3)) for i in range(20)
    ]
    for prefix in ("PH0", "PH49"):
        for lines in _sections(render(prefix, rules, {})).values():
            for chain in _declared(lines):
                assert len(chain) <= 28, chain
                assert chain.startswith(prefix + "-")


def test_stale_chains_are_flushed_and_deleted() -> None:
    live = _rule(2)
    old = ServiceRule("default/old:80", "10.207.250.12", 80, _endpoints(1))
    first = _sections(render(PREFIX, [live, old], {}))
    existing = {table: set(_declared(lines)) for table, lines in first.items()}
    existing["filter"].add(f"{PREFIX}-SOMETHING-OLD")
    sections = _sections(render(PREFIX, [live], existing))

    needed = _sections(render(PREFIX, [live], {}))
    for table in ("filter", "nat"):
        lines = sections[table]
        keep = set(_declared(needed[table]))
        stale = existing[table] - keep
        assert stale, f"test setup: no stale chain in {table}"
        # declared (which flushes it) and deleted
        assert stale <= set(_declared(lines))
        assert set(_deleted(lines)) == stale
        # deletions come after every rule, so nothing still jumps to a deleted chain
        last_rule = max((i for i, ln in enumerate(lines) if ln.startswith("-A ")), default=-1)
        first_delete = min(i for i, ln in enumerate(lines) if ln.startswith("-X "))
        assert first_delete > last_rule
        for chain in stale:
            assert not any(f"-j {chain}" in ln for ln in lines if ln.startswith("-A "))
            assert not _rules(lines, chain)
    # the chains of the live service are kept
    assert not set(_deleted(sections["nat"])) & set(_declared(needed["nat"]))


def test_chains_still_needed_are_not_deleted() -> None:
    rules = [_rule(3, external_port=30080)]
    existing = {table: set(_declared(lines)) for table, lines in _sections(render(PREFIX, rules, {})).items()}
    text = render(PREFIX, rules, existing)
    assert "-X " not in text
    assert text == render(PREFIX, rules, {})


@pytest.mark.skipif(shutil.which("iptables-restore") is None, reason="iptables-restore is not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="iptables-restore --test needs root")
def test_iptables_restore_accepts_the_output() -> None:
    rules = [
        _rule(3, external_port=30080),
        ServiceRule("default/empty:53", "10.207.250.11", 53, (), protocol="udp"),
        ServiceRule("default/lb-empty:80", "10.207.250.12", 80, (), external_port=30081),
    ]
    stale = {"nat": {f"{PREFIX}-SVC-0123456789", f"{PREFIX}-SEP-0123456789"}, "filter": set[str]()}
    for text in (render(PREFIX, rules, {}), render(PREFIX, rules, stale), render(PREFIX, rules, {}, HOST)):
        proc = subprocess.run(
            ["iptables-restore", "-w", "--noflush", "--test"], input=text, text=True,
            capture_output=True, timeout=30, check=False,
        )
        unusable = r"Permission denied|not permitted|can't initialize"
        if proc.returncode != 0 and re.search(unusable, proc.stderr):
            pytest.skip(f"iptables is not usable here: {proc.stderr.strip()}")
        assert proc.returncode == 0, proc.stderr + "\n" + text


HOST = HostSources("ph7br", "10.207.0.2", "10.207.0.3")


def test_host_service_traffic_leaves_from_its_own_addresses() -> None:
    """Service connections from the host never share a source with its direct connections to pods."""
    post = _rules(_sections(render(PREFIX, [_rule(1, external_port=30080)], {}, HOST))["nat"],
                  f"{PREFIX}-POSTROUTING")
    assert post[0][:2] == ["-s", "127.0.0.0/8"] and _opt(post[0], "--to-source") == "10.207.0.3"
    assert "--mark" in post[1] and _opt(post[1], "--to-source") == "10.207.0.2"
    assert all(_opt(r, "-j") == "SNAT" for r in post)  # no MASQUERADE: it would pick the bridge address


def test_nodes_still_masquerade_to_their_own_address() -> None:
    post = _rules(_sections(render(PREFIX, [_rule(1)], {}))["nat"], f"{PREFIX}-POSTROUTING")
    assert {_opt(r, "-j") for r in post} == {"MASQUERADE"}
    assert not any("--random-fully" in r or "--to-ports" in r for r in post)  # ports kept: see nat's doc
