"""``examples/eks/cluster.yaml``: valid for eksctl, and what podhop's migration needs on every node.

Why: nobody can run ``eksctl create cluster`` from here (no AWS), so the file is
checked as far as this machine allows. eksctl's own JSON schema (vendored from
its Go module, see ``tests/data/eks/README.md``) says whether eksctl accepts the
ClusterConfig — it is strict (no unknown fields), so a misspelt key fails; the
NodeConfig inside ``overrideBootstrapCommand`` is a string to eksctl, so it is
checked against nodeadm's own CRD schema, unknown fields refused as the API
server's pruning would drop them. The podhop-specific parts are then checked
against podhop's one source for them: the containerd drop-in and the CRIU
configuration are the ones the ``--kind kubernetes`` nodes run with
(``podhop.kubekind.config``), so the kind's tests cover what EKS nodes get.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from podhop.kubekind import config
from podhop.kubekind.layout import KubeLayout
from podhop.settings import Paths

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "eks" / "cluster.yaml"
DATA = ROOT / "tests" / "data" / "eks"
EKSCTL_SCHEMA = DATA / "eksctl-v0.215.0-schema.json"
NODEADM_CRD = DATA / "nodeadm-v0.0.0-20251001043626-89ce6578d960-nodeconfigs.yaml"


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLE.read_text())
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def eksctl() -> jsonschema.Draft7Validator:
    schema = json.loads(EKSCTL_SCHEMA.read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.fixture(scope="module")
def nodeconfig_schema() -> dict[str, Any]:
    crd = yaml.safe_load(NODEADM_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _errors(validator: jsonschema.Draft7Validator, doc: Any) -> list[str]:
    errors = validator.iter_errors(doc)
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def _unknown_fields(schema: dict[str, Any], doc: Any, path: str = "") -> list[str]:
    """Fields a structural schema does not declare (the API server would prune them silently)."""
    out: list[str] = []
    if isinstance(doc, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return out
        for key, value in doc.items():
            if props is not None and key in props:
                out += _unknown_fields(props[key], value, f"{path}/{key}")
            elif isinstance(extra, dict):
                out += _unknown_fields(extra, value, f"{path}/{key}")
            elif props is not None or extra is False:
                out.append(f"{path}/{key}")
    elif isinstance(doc, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(doc):
            out += _unknown_fields(schema["items"], item, f"{path}/{i}")
    return out


def _nodegroup(cluster: dict[str, Any]) -> dict[str, Any]:
    assert not cluster.get("nodeGroups"), "one managed node group, no self-managed ones"
    (ng,) = cluster["managedNodeGroups"]
    assert isinstance(ng, dict)
    return ng


def _nodeconfig(cluster: dict[str, Any]) -> dict[str, Any]:
    doc = yaml.safe_load(_nodegroup(cluster)["overrideBootstrapCommand"])
    assert isinstance(doc, dict)
    return doc


def _script(cluster: dict[str, Any]) -> str:
    return "\n".join(_nodegroup(cluster)["preBootstrapCommands"])


# --------------------------------------------------------------------------- eksctl's schema


def test_example_is_valid_for_eksctl(cluster: dict[str, Any], eksctl: jsonschema.Draft7Validator) -> None:
    assert _errors(eksctl, cluster) == []


def test_eksctl_schema_refuses_what_eksctl_would(
    cluster: dict[str, Any], eksctl: jsonschema.Draft7Validator
) -> None:
    """The check can fail: a misspelt field, a wrong type, an unknown AMI family."""
    typo = copy.deepcopy(cluster)
    typo["managedNodeGroups"][0]["desiredCapcity"] = 10
    assert any("desiredCapcity" in e for e in _errors(eksctl, typo))
    wrong_type = copy.deepcopy(cluster)
    wrong_type["managedNodeGroups"][0]["desiredCapacity"] = "ten"
    assert _errors(eksctl, wrong_type)
    family = copy.deepcopy(cluster)
    family["managedNodeGroups"][0]["amiFamily"] = "AmazonLinux2024"
    assert _errors(eksctl, family)
    no_region = copy.deepcopy(cluster)
    del no_region["metadata"]["region"]
    assert any("region" in e for e in _errors(eksctl, no_region))


def test_nodeconfig_is_valid_for_nodeadm(cluster: dict[str, Any], nodeconfig_schema: dict[str, Any]) -> None:
    nodeconfig = _nodeconfig(cluster)
    assert nodeconfig["apiVersion"] == "node.eks.aws/v1alpha1"
    assert nodeconfig["kind"] == "NodeConfig"
    assert _errors(jsonschema.Draft7Validator(nodeconfig_schema), nodeconfig) == []
    assert _unknown_fields(nodeconfig_schema, nodeconfig) == []
    misspelt = copy.deepcopy(nodeconfig)
    misspelt["spec"]["containerd"]["confg"] = misspelt["spec"]["containerd"].pop("config")
    assert _unknown_fields(nodeconfig_schema, misspelt) == ["/spec/containerd/confg"]


# --------------------------------------------------------------------------- the seed's cluster


def test_the_seeds_cluster(cluster: dict[str, Any]) -> None:
    assert cluster["apiVersion"] == "eksctl.io/v1alpha5"
    assert cluster["kind"] == "ClusterConfig"
    meta = cluster["metadata"]
    assert (meta["name"], meta["region"]) == ("research-cluster", "ap-south-1")
    major, minor = map(int, str(meta["version"]).split("."))
    assert (major, minor) >= (1, 30), "the kubelet's checkpoint API is on by default from 1.30"
    ng = _nodegroup(cluster)
    assert ng["amiFamily"] == "AmazonLinux2023"
    assert ng["desiredCapacity"] == ng["minSize"] == ng["maxSize"] == 10


# --------------------------------------------------------------------------- what migration needs


def test_nodes_get_criu_4_2_or_newer_on_containerds_path(cluster: dict[str, Any]) -> None:
    script = _script(cluster)
    assert script.lstrip().startswith("set -euo pipefail"), "a failed build must fail the node's boot"
    version = re.search(r"^CRIU_VERSION=(\d+)\.(\d+)", script, re.M)
    assert version is not None
    assert (int(version[1]), int(version[2])) >= (4, 2)
    assert "checkpoint-restore/criu/archive/refs/tags/v${CRIU_VERSION}.tar.gz" in script
    assert re.search(r"make -C /tmp/criu install-criu PREFIX=/usr/local$", script, re.M)
    assert "/usr/local/sbin/criu --version" in script  # on the default PATH containerd's shims search


def test_nodes_criu_configuration_is_the_kinds(cluster: dict[str, Any]) -> None:
    """runc reads /etc/criu/runc.conf for every dump and restore: the same options as the kind's nodes."""
    match = re.search(r"^printf (.+) > /etc/criu/runc\.conf$", _script(cluster), re.M)
    assert match is not None
    (fmt,) = shlex.split(match[1])
    assert fmt.encode().decode("unicode_escape") == config.CRIU_CONF


def test_containerd_drop_in_enables_restore_as_the_kind_does(cluster: dict[str, Any]) -> None:
    dropin = tomllib.loads(_nodeconfig(cluster)["spec"]["containerd"]["config"])
    assert dropin == tomllib.loads(config.CONTAINERD_RESTORE_DROPIN)
    assert dropin == {"plugins": {config.CRI_RUNTIME_PLUGIN: {config.RESTORE_SETTING: True}}}
    lay = KubeLayout("k8s1", 3, Paths(Path("/data"), Path("/run/ph")))
    kind = tomllib.loads(config.containerd_config(lay, 1, Path("/cni")))
    assert kind["version"] == 3  # the same config schema: nodeadm merges a v3 drop-in for containerd 2
    assert kind["plugins"][config.CRI_RUNTIME_PLUGIN][config.RESTORE_SETTING] is True
