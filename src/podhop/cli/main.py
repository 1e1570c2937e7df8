"""Entry point: the ``podhop`` command group and its subcommands."""

from __future__ import annotations

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


def main() -> None:
    cli()
