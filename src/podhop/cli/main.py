"""Entry point: the ``podhop`` command group and its subcommands, also run as ``kubectl podhop``.

Why: kubectl users expect a plugin to act on kubectl's cluster. kubectl runs
``kubectl-podhop`` from PATH with the arguments after ``podhop`` and its own
environment, so invoked under that name the commands default to the
cluster of ``$KUBECONFIG`` (its first file) or ``~/.kube/config``, unless
``--cluster``/``--kubeconfig`` or ``$PODHOP_CLUSTER`` says otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from podhop import __version__
from podhop.cli import (
    cluster_cmds,
    experiment_cmds,
    kube_cmds,
    migrate_cmds,
    object_cmds,
    setup_cmds,
    sim_cmds,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="podhop")
@click.option("--debug", is_flag=True, help="Show full tracebacks of errors.")
def cli(debug: bool) -> None:
    """podhop: live migration of running pods between nodes, measured and decided."""
    if debug:
        import os

        os.environ["PODHOP_DEBUG"] = "1"


for module in (setup_cmds, cluster_cmds, kube_cmds, object_cmds, migrate_cmds, experiment_cmds, sim_cmds):
    for command in module.COMMANDS:
        cli.add_command(command)


PLUGIN = "kubectl-podhop"


def plugin_kubeconfig(argv0: str, environ: dict[str, str] | os._Environ[str]) -> str | None:
    """The kubeconfig a ``kubectl podhop`` run defaults to (None: not run as the plugin, or told)."""
    if Path(argv0).name != PLUGIN or environ.get("PODHOP_CLUSTER") or environ.get("PODHOP_KUBECONFIG"):
        return None
    first = next((p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p), None)
    return first or str(Path(environ.get("HOME", "/root")) / ".kube" / "config")


def main() -> None:
    kubeconfig = plugin_kubeconfig(sys.argv[0], os.environ)
    if kubeconfig is not None and not any(a.startswith(("--cluster", "--kubeconfig")) for a in sys.argv[1:]):
        os.environ["PODHOP_KUBECONFIG"] = kubeconfig
    cli(prog_name="kubectl podhop" if Path(sys.argv[0]).name == PLUGIN else "podhop")
