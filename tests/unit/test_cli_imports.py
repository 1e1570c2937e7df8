"""The CLI starts without its heavy dependencies (issue 9: start-up under 0.3 s).

Why a module check and not a timing: what a command imports is deterministic,
its wall time on a shared 2-core machine is not. matplotlib, highspy, numpy and
scipy cost most of a second together; pydantic (manifest and archive schemas)
another 0.1 s. Commands that need none of them (``--help``, ``get``, ``top``,
``cluster list``) must not pay for them; the timing itself is
``benchmarks/cli_bench.py``'s job. Each check runs in a fresh interpreter,
because this test session has long imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("matplotlib", "highspy", "numpy", "scipy")
#: Also kept out of the reading commands: pydantic's models and YAML.
SCHEMAS = ("pydantic", "yaml")


def loaded_after(code: str) -> set[str]:
    """The top-level packages loaded by a fresh interpreter after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return {name.split(".")[0] for name in json.loads(out.splitlines()[-1])}


def test_importing_the_cli_loads_no_heavy_module() -> None:
    loaded = loaded_after("import podhop.cli.main")
    assert not loaded & {*HEAVY, *SCHEMAS}, sorted(loaded & {*HEAVY, *SCHEMAS})


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["cluster", "--help"], ["simulate", "--help"], ["experiment", "run", "--help"]],
    ids=" ".join,
)
def test_help_loads_no_heavy_module(argv: list[str]) -> None:
    code = (
        "from podhop.cli.main import cli\n"
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    cli({argv!r}, standalone_mode=False)\n"
    )
    loaded = loaded_after(code)
    assert not loaded & {*HEAVY, *SCHEMAS}, sorted(loaded & {*HEAVY, *SCHEMAS})


@pytest.mark.parametrize(
    "modules",
    [
        # get / top / cluster list / logs: the store, the cluster, its rendering and metrics
        ["podhop.store", "podhop.backends.local.cluster", "podhop.backends.local.render"],
        ["podhop.backends.local.metrics", "podhop.backends.local.pods"],
    ],
    ids=lambda m: "+".join(x.rsplit(".", 1)[-1] for x in m),
)
def test_reading_commands_load_no_heavy_module(modules: list[str]) -> None:
    loaded = loaded_after("\n".join(f"import {m}" for m in ["podhop.cli.main", *modules]))
    assert not loaded & {*HEAVY, *SCHEMAS}, sorted(loaded & {*HEAVY, *SCHEMAS})


def test_inspect_loads_no_plotting_or_solver() -> None:
    """``inspect`` validates the archive's config with pydantic, but needs no numpy, plots or solver."""
    loaded = loaded_after("import podhop.cli.main, podhop.archive.reader")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_the_probe_itself_sees_imports() -> None:
    """The check can fail: importing the simulator does load numpy."""
    assert "numpy" in loaded_after("import podhop.sim.engine")


def test_kubectl_plugin_defaults_to_kubectls_cluster() -> None:
    from podhop.cli.main import plugin_kubeconfig

    assert plugin_kubeconfig("/usr/bin/podhop", {"KUBECONFIG": "/k"}) is None  # not the plugin
    assert plugin_kubeconfig("/x/kubectl-podhop", {"KUBECONFIG": "/a:/b"}) == "/a"
    assert plugin_kubeconfig("kubectl-podhop", {"HOME": "/home/u"}) == "/home/u/.kube/config"
    assert plugin_kubeconfig("kubectl-podhop", {"KUBECONFIG": "/a", "PODHOP_CLUSTER": "c"}) is None
