"""The experiment spec: the shipped examples load, and every bad key is named with what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from podhop.experiment.spec import ExperimentSpec, SpecError, load_spec, manifest_path, parse_spec
from podhop.migrate.plan import Strategy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def minimal(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "t",
        "workload": {"manifests": ["nginx.yaml"]},
        "load": {"service": "nginx-service", "requests": 100, "concurrency": 10},
    }
    for key, value in over.items():
        section, _, field = key.partition("__")
        if field:
            doc.setdefault(section, {})[field] = value
        else:
            doc[section] = value
    return doc


def error_of(doc: Any) -> str:
    with pytest.raises(SpecError) as exc:
        parse_spec(doc, "spec.yaml")
    return str(exc.value)


def test_seed_example_reproduces_the_seed() -> None:
    spec, text = load_spec(EXAMPLES / "seed.yaml")
    assert "hey" in text
    assert spec.load.requests == 10000 and spec.load.concurrency == 100
    assert spec.load.via == "load-balancer"
    assert spec.migration.pod == "hottest-cpu" and spec.migration.target == "least-loaded"
    assert spec.migration.strategy is Strategy.CLONE
    assert spec.probe.rate_hz >= 200
    manifests = yaml.safe_load_all(
        manifest_path(EXAMPLES / "seed.yaml", spec.workload.manifests[0]).read_text()
    )
    deployment = next(d for d in manifests if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 10


def test_redis_example_is_stateful() -> None:
    spec, _ = load_spec(EXAMPLES / "seed-redis.yaml")
    assert spec.migration.strategy is Strategy.COLD
    assert spec.probe_service == "redis"
    assert spec.migration.verify == ["redis-cli", "DBSIZE"]
    assert spec.workload.prepare[0].selector == {"app": "redis"}


def test_defaults_are_filled() -> None:
    spec = parse_spec(minimal())
    assert isinstance(spec, ExperimentSpec)
    assert spec.cluster.nodes == 3 and spec.cluster.cpu_m == 1000 and spec.cluster.memory_b == 2 * 2**30
    assert spec.probe.rate_hz == 200 and spec.probe_service == "nginx-service"
    assert spec.repetitions == 1 and spec.migration.strategy is Strategy.CLONE


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (minimal(load__reqests=5), "load.reqests: unknown key (expected one of: concurrency,"),
        (minimal(colour="red"), "colour: unknown key (expected one of: cluster, description,"),
        (minimal(load__concurrency="many"), "load.concurrency: Input should be a valid integer"),
        (minimal(load__concurrency=0), "load.concurrency: Input should be greater than or equal to 1"),
        (minimal(load={"requests": 5}), "load.service: required key is missing"),
        (minimal(load__via="elb"), "load.via: Input should be 'cluster-ip' or 'load-balancer'"),
        (minimal(load__path="index.html"), "load.path: expected a path starting with '/'"),
        (minimal(load__requests=5), "requests (5) must be at least concurrency (10)"),
        (minimal(migration__strategy="teleport"), "migration.strategy: Input should be 'cold', 'clone',"),
        (minimal(migration__target="the-big-one"), "migration.target: expected a node name (node-N) or"),
        (minimal(migration__target="node-7"), "migration.target: node-7 does not exist in a 3-node cluster"),
        (minimal(migration__selector={"app": "x"}, migration__pod="web-1"), "migration.selector: only used"),
        (minimal(probe__rate_hz=50), "probe.rate_hz: Input should be greater than or equal to 200"),
        (minimal(cluster__nodes=1), "cluster.nodes: Input should be greater than or equal to 2"),
        (minimal(cluster__node_memory="lots"), "cluster.node_memory:"),
        (minimal(cluster__node_cpu="50m"), "cluster.node_cpu: expected at least 100m"),
        (minimal(cluster__link_bandwidth="fast"), "cluster.link_bandwidth: invalid bandwidth 'fast'"),
        (minimal(cluster__name="Big_Cluster"), "cluster.name: expected 1-24 lowercase letters"),
        (minimal(workload={"manifests": []}), "workload.manifests: List should have at least 1 item"),
        (
            minimal(workload={"manifests": ["a.yaml"], "prepare": [{"selector": {}}]}),
            "workload.prepare[0].command: required key is missing",
        ),
        (minimal(repetitions=0), "repetitions: Input should be greater than or equal to 1"),
        (minimal(name="has space"), "name: expected letters, digits"),
        (["a", "list"], "expected a mapping of keys"),
    ],
)
def test_errors_name_the_key_and_what_was_expected(doc: Any, expected: str) -> None:
    message = error_of(doc)
    assert message.startswith("spec.yaml: ")
    assert expected in message


def test_every_error_is_reported_at_once() -> None:
    message = error_of(minimal(load__concurrency=0, probe__rate_hz=1))
    assert "load.concurrency" in message and "probe.rate_hz" in message


def test_files_yaml_and_manifests(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad_yaml)
    with pytest.raises(SpecError, match="cannot read experiment spec"):
        load_spec(tmp_path / "missing.yaml")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(minimal(workload={"manifests": ["nope.yaml"]})))
    with pytest.raises(SpecError, match=r"workload.manifests\[0\]: file 'nope.yaml' not found"):
        load_spec(spec_file)
    (tmp_path / "nope.yaml").write_text("kind: Service\n")
    spec, _ = load_spec(spec_file)
    assert manifest_path(spec_file, spec.workload.manifests[0]) == tmp_path / "nope.yaml"
