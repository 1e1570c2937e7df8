"""``podhop simulate`` and ``podhop calibrate``: the simulator and the migration cost model.

Why: both are pure computations (no cluster, no root), so the commands only
parse options, call :mod:`podhop.sim` or :mod:`podhop.policies.calibration`,
show progress for long runs, and print a table and where the files went.
The simulator, the solver (highspy), numpy and matplotlib are imported inside
the commands, so that loading this module costs the other commands nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from podhop.cli.common import console, err_console, handle_errors, print_table


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, or a plain line every 10 % when stderr is not a terminal."""
    if not err_console.is_terminal:
        shown = -1

        def line(done: int, of: int) -> None:
            nonlocal shown
            tenth = done * 10 // max(of, 1)
            if tenth > shown:
                shown = tenth
                err_console.print(f"  step {done}/{of}", highlight=False)

        yield line
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn("simulating"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("simulate", total=total)
        yield lambda done, of: bar.update(task, completed=done)


@click.command("simulate")
@click.argument("spec", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--nodes", type=click.IntRange(1), help="Edge nodes (overrides the spec).")
@click.option("--services", type=click.IntRange(1), help="Services.")
@click.option("--users", type=click.IntRange(0), help="Users.")
@click.option("--steps", type=click.IntRange(1), help="Simulated steps.")
@click.option("--policies", help="Comma-separated policies, e.g. least-allocated,mobility,ilp.")
@click.option("--seed", type=int, help="Random seed (same seed, same results).")
@click.option(
    "--output",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (default: results/sim-<timestamp>).",
)
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
@handle_errors
def simulate_cmd(
    spec: Path | None,
    nodes: int | None,
    services: int | None,
    users: int | None,
    steps: int | None,
    policies: str | None,
    seed: int | None,
    output: Path | None,
    no_plots: bool,
) -> None:
    """Simulate an edge cluster and compare placement/migration policies side by side."""
    from podhop.sim.engine import simulate
    from podhop.sim.output import write_results
    from podhop.sim.spec import load_spec

    chosen = [p.strip() for p in policies.split(",") if p.strip()] if policies else None
    sim = load_spec(spec).with_overrides(
        nodes=nodes, services=services, users=users, steps=steps, policies=chosen, seed=seed
    )
    out = output or Path("results") / f"sim-{time.strftime('%Y%m%d-%H%M%S')}"
    err_console.print(
        f"{sim.nodes} nodes, {sim.services} services, {sim.users} users, {sim.steps} steps × "
        f"{sim.step_s:g} s; policies: {', '.join(sim.policies)}",
        highlight=False,
    )
    with _progress(sim.steps) as report:
        result = simulate(sim, report)
    files = write_results(result, out, plots=not no_plots)
    rows = [
        [
            name,
            f"{m['mean_latency_ms']:.1f}",
            f"{m['p95_latency_ms']:.1f}",
            f"{100 * float(m['sla_violation_rate']):.2f}",
            str(m["migrations"]),
            f"{m['downtime_s']:.1f}",
            f"{m['energy_kwh']:.2f}",
            f"{m['imbalance_pp']:.1f}",
        ]
        for name, m in result.summary.items()
    ]
    print_table(
        [
            "POLICY",
            "MEAN-MS",
            "P95-MS",
            "SLA-VIOL-%",
            "MIGRATIONS",
            "DOWNTIME-S",
            "ENERGY-KWH",
            "IMBALANCE-PP",
        ],
        rows,
    )
    console.print(
        f"{len(files)} files in [bold]{out}[/] ({result.timings['total_s']:.1f} s)", highlight=False
    )


@click.command("calibrate")
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("results/cost-model.json"),
    show_default=True,
    help="Where to write the model.",
)
@click.option(
    "--base",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Start from this model instead of the built-in defaults.",
)
@handle_errors
def calibrate_cmd(results: tuple[Path, ...], output: Path, base: Path | None) -> None:
    """Fit the migration cost model to measured migrations (benchmark JSON, experiment results)."""
    from podhop.policies.calibration import fit, load_samples
    from podhop.policies.costmodel import MigrationCostModel

    samples = load_samples(results)
    fitted = fit(samples, MigrationCostModel.load(base) if base else None)
    fitted.model.save(output)
    rows = []
    for f in fitted.fits:
        cost = fitted.model.cost(f.strategy)
        d, t = cost.downtime, cost.total

        def rmse(before: float | None, after: float | None) -> str:
            return "-" if before is None or after is None else f"{before:.0f}→{after:.0f}"

        rows.append(
            [
                f.strategy,
                str(f.samples),
                f"{d.fixed_ms:.0f} + {d.per_wire:.2f}·wire + {d.per_mib_ms:.2f}/MiB",
                rmse(f.rmse_downtime_before, f.rmse_downtime_after),
                f"{t.fixed_ms:.0f} + {t.per_wire:.2f}·wire + {t.per_mib_ms:.2f}/MiB",
                rmse(f.rmse_total_before, f.rmse_total_after),
            ]
        )
    print_table(["STRATEGY", "SAMPLES", "DOWNTIME-MS", "RMSE", "TOTAL-MS", "RMSE"], rows)
    console.print(f"{len(samples)} migrations; model written to [bold]{output}[/]", highlight=False)


COMMANDS = [simulate_cmd, calibrate_cmd]
