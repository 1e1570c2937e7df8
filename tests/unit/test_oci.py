"""The OCI runtime config of a container, and Kubernetes' command/args/env rules."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import pytest

from podhop.runtime.oci import ProcessSpec, config, resolve_process

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

ENTRYPOINT = ("/docker-entrypoint.sh",)
CMD = ("nginx", "-g", "daemon off;")


def _resolve(
    *,
    entrypoint: tuple[str, ...] = ENTRYPOINT,
    cmd: tuple[str, ...] = CMD,
    image_env: tuple[str, ...] = (),
    image_workdir: str = "",
    command: tuple[str, ...] | None = None,
    args: tuple[str, ...] | None = None,
    env: tuple[tuple[str, str], ...] = (),
    working_dir: str | None = None,
) -> ProcessSpec:
    return resolve_process(entrypoint, cmd, image_env, image_workdir, command, args, env, working_dir)


def _env(spec: ProcessSpec) -> dict[str, str]:
    out = {}
    for item in spec.env:
        key, sep, value = item.partition("=")
        assert sep == "=", item
        assert key not in out, f"{key} appears twice"
        out[key] = value
    return out


# command and args (https://kubernetes.io/docs/tasks/inject-data-application/define-command-argument-container/)


def test_neither_command_nor_args_runs_image_entrypoint_and_cmd() -> None:
    assert _resolve().args == (*ENTRYPOINT, *CMD)


def test_command_replaces_entrypoint_and_drops_image_cmd() -> None:
    assert _resolve(command=("sleep", "infinity")).args == ("sleep", "infinity")


def test_args_replace_cmd_and_keep_entrypoint() -> None:
    assert _resolve(args=("echo", "hi")).args == (*ENTRYPOINT, "echo", "hi")


def test_command_and_args_both_given() -> None:
    assert _resolve(command=("sh", "-c"), args=("echo hi",)).args == ("sh", "-c", "echo hi")


def test_image_without_entrypoint_runs_cmd() -> None:
    assert _resolve(entrypoint=(), cmd=("python3", "app.py")).args == ("python3", "app.py")
    assert _resolve(entrypoint=(), cmd=("python3",), args=("other.py",)).args == ("other.py",)


def test_empty_argv_raises() -> None:
    with pytest.raises(ValueError):
        _resolve(entrypoint=(), cmd=())
    with pytest.raises(ValueError):
        _resolve(entrypoint=(), cmd=(), args=())
    with pytest.raises(ValueError):
        _resolve(entrypoint=(), cmd=(), command=(), args=())


def test_empty_args_list_is_like_no_args() -> None:
    assert _resolve(args=()).args == (*ENTRYPOINT, *CMD)


def test_empty_command_list_is_like_no_command() -> None:
    assert _resolve(command=()).args == (*ENTRYPOINT, *CMD)


# environment


def test_container_env_overrides_image_env() -> None:
    spec = _resolve(
        image_env=("PATH=/opt/bin:/bin", "LANG=C.UTF-8", "MODE=image"),
        env=(("MODE", "container"), ("EXTRA", "1")),
    )
    assert _env(spec) == {"PATH": "/opt/bin:/bin", "LANG": "C.UTF-8", "MODE": "container", "EXTRA": "1"}


def test_image_env_values_may_contain_equals_signs() -> None:
    spec = _resolve(image_env=("OPTS=-Da=b -Dc=d", "EMPTY="))
    env = _env(spec)
    assert env["OPTS"] == "-Da=b -Dc=d"
    assert env["EMPTY"] == ""


def test_later_container_env_entry_wins() -> None:
    assert _env(_resolve(env=(("A", "1"), ("A", "2"))))["A"] == "2"


def test_path_defaults_when_nobody_sets_it() -> None:
    assert _env(_resolve())["PATH"] == DEFAULT_PATH
    assert _env(_resolve(image_env=("HOME=/root",)))["PATH"] == DEFAULT_PATH


def test_path_from_image_or_container_is_kept() -> None:
    assert _env(_resolve(image_env=("PATH=/opt/bin",)))["PATH"] == "/opt/bin"
    assert _env(_resolve(image_env=("PATH=/opt/bin",), env=(("PATH", "/x"),)))["PATH"] == "/x"


# working directory


@pytest.mark.parametrize(
    ("image_workdir", "working_dir", "expected"),
    [
        ("", None, "/"),
        ("/app", None, "/app"),
        ("/app", "/data", "/data"),
        ("", "/data", "/data"),
        ("/app", "", "/app"),
    ],
)
def test_working_dir_precedence(image_workdir: str, working_dir: str | None, expected: str) -> None:
    assert _resolve(image_workdir=image_workdir, working_dir=working_dir).cwd == expected


# the runtime config


def _config(**kw: Any) -> dict[str, Any]:
    process = ProcessSpec(args=("sleep", "1"), env=("PATH=/bin", "A=b"), cwd="/work")
    kw.setdefault("hostname", "web-0")
    kw.setdefault("netns_path", Path("/run/netns/ph-demo.web-0.abc123"))
    kw.setdefault("cgroups_path", "podhop/demo/node-1/abc123/web")
    return config(process, **kw)


def test_config_is_json_serialisable() -> None:
    cfg = _config(cpu_limit_m=500, memory_limit_b=2**27, annotations={"a": "b"})
    assert json.loads(json.dumps(cfg)) == cfg
    assert cfg["root"] == {"path": "rootfs", "readonly": False}


def test_process_section() -> None:
    proc = _config()["process"]
    assert proc["args"] == ["sleep", "1"]
    assert proc["env"] == ["PATH=/bin", "A=b"]
    assert proc["cwd"] == "/work"
    assert proc["terminal"] is False
    assert proc["user"]["uid"] == 0
    assert proc["user"]["gid"] == 0


def test_network_namespace_is_the_pods_by_path() -> None:
    namespaces = _config()["linux"]["namespaces"]
    network = [ns for ns in namespaces if ns["type"] == "network"]
    assert network == [{"type": "network", "path": "/run/netns/ph-demo.web-0.abc123"}]
    # the other namespaces are new (no path), one entry per type
    types = [ns["type"] for ns in namespaces]
    assert len(types) == len(set(types))
    assert {"pid", "mount"} <= set(types)
    assert all("path" not in ns for ns in namespaces if ns["type"] != "network")


@pytest.mark.parametrize(
    "given",
    ["podhop/demo/node-1/abc123/web", "/podhop/demo/node-1/abc123/web", "podhop/demo/node-1/abc123/web/"],
)
def test_cgroups_path_is_absolute(given: str) -> None:
    assert _config(cgroups_path=given)["linux"]["cgroupsPath"] == "/podhop/demo/node-1/abc123/web"


def test_nofile_rlimit_not_above_hard_limit() -> None:
    rlimits = _config()["process"]["rlimits"]
    nofile = [r for r in rlimits if r["type"] == "RLIMIT_NOFILE"]
    assert len(nofile) == 1
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert 0 < nofile[0]["soft"] <= nofile[0]["hard"]
    if hard != resource.RLIM_INFINITY:
        assert nofile[0]["hard"] <= hard


def test_nofile_rlimit_with_infinite_hard_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, resource.RLIM_INFINITY))
    nofile = _config()["process"]["rlimits"][0]
    assert nofile["hard"] != resource.RLIM_INFINITY
    assert 0 < nofile["hard"] <= 1 << 20


def test_nofile_rlimit_follows_hard_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (1024, 4096))
    nofile = _config()["process"]["rlimits"][0]
    assert nofile == {"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 4096}


def test_no_limits_unless_given() -> None:
    resources = _config()["linux"]["resources"]
    assert "cpu" not in resources
    assert "memory" not in resources


def test_cpu_limit_as_cfs_quota() -> None:
    resources = _config(cpu_limit_m=500)["linux"]["resources"]
    cpu = resources["cpu"]
    assert cpu["quota"] / cpu["period"] == pytest.approx(0.5)
    assert "memory" not in resources
    cpu = _config(cpu_limit_m=2000)["linux"]["resources"]["cpu"]
    assert cpu["quota"] / cpu["period"] == pytest.approx(2.0)


def test_memory_limit_in_bytes() -> None:
    resources = _config(memory_limit_b=256 * 2**20)["linux"]["resources"]
    assert resources["memory"]["limit"] == 256 * 2**20
    assert "cpu" not in resources


def test_devices_are_denied_by_default() -> None:
    devices = _config()["linux"]["resources"]["devices"]
    assert devices[0] == {"allow": False, "access": "rwm"}


def test_hostname_fits_limit() -> None:
    assert _config(hostname="h" * 100)["hostname"] == "h" * 63
    assert _config(hostname="web-0")["hostname"] == "web-0"


def test_annotations_default_to_empty() -> None:
    assert _config()["annotations"] == {}
    assert _config(annotations={"io.podhop/pod": "web"})["annotations"] == {"io.podhop/pod": "web"}


def test_proc_is_mounted() -> None:
    mounts = {m["destination"]: m for m in _config()["mounts"]}
    assert mounts["/proc"]["type"] == "proc"
    assert "ro" in mounts["/sys"]["options"]
