"""``podhop experiment run|validate``, ``podhop report`` and ``podhop demo``.

Why: the experiment is meant to be one command — run it, watch each step,
get the seed's table filled and a report — and equally usable from scripts
(``--json`` prints one JSON document on stdout and nothing else there). The
progress display goes to stderr; the exit status says how the run ended:
0 done, 1 a step failed (results so far are kept and the step is named),
130 interrupted (the run's cluster is removed either way, unless kept).
The runner (and through it the cluster, pydantic specs, numpy) and the report
(matplotlib) are imported inside the commands, to keep every other command's
start-up short.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from podhop.cli.common import console, err_console, handle_errors, kubeconfig_options, require_root
from podhop.errors import NotFoundError

if TYPE_CHECKING:
    from rich.progress import TaskID

    from podhop.experiment.runner import Outcome, RunOptions

F = TypeVar("F", bound=Callable[..., Any])


class RichEvents:
    """Each step as a line with a spinner and elapsed time, ticked off when done (stderr)."""

    def __init__(self) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.live = err_console.is_terminal
        self.progress = Progress(
            SpinnerColumn(finished_text=" "),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
        )
        self.task: TaskID | None = None
        self.title = ""

    def __enter__(self) -> RichEvents:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live:
            self.progress.stop()

    def step(self, title: str) -> None:
        self.title = title
        if self.live:
            self.task = self.progress.add_task(title, total=1)
        else:
            err_console.print(f"→ {title}", highlight=False)

    def status(self, message: str) -> None:
        if self.live and self.task is not None:
            self.progress.update(self.task, description=f"{self.title} [dim]— {message}[/]")

    def _end(self, mark: str, text: str) -> None:
        line = f"{mark} {self.title}" + (f": {text}" if text else "")
        if self.live and self.task is not None:
            self.progress.update(self.task, description=line, completed=1)
            self.progress.stop_task(self.task)
            self.task = None
        else:
            err_console.print(f"  {line}", highlight=False)

    def done(self, summary: str) -> None:
        self._end("[green]✓[/]", summary)

    def fail(self, message: str) -> None:
        self._end("[red]✗[/]", message)

    def warn(self, message: str) -> None:
        target = self.progress.console if self.live else err_console
        target.print(f"[yellow]warning:[/] {message}", highlight=False)


def _render(path: Path) -> tuple[Any, str | None]:
    """Render the report; a failure here must not hide the run's own outcome."""
    from podhop.report.render import render_report

    try:
        return render_report(path), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


def _print_table(rows: list[tuple[str, str, str]], title: str) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False, expand=False)
    table.add_column("Metric", style="bold", no_wrap=True)
    table.add_column("Value")
    wide = console.width >= 150
    if wide:
        table.add_column("How it was measured", style="dim")
    for metric, value, how in rows:
        table.add_row(metric, value, *([how.replace("`", "")] if wide else []))
    console.print(table)


def _finish(outcome: Outcome, as_json: bool) -> None:
    """Render, print the table and where things are, and exit with the run's status."""
    rendered, render_error = _render(outcome.path)
    res = outcome.results
    if as_json:
        doc = {
            "status": res.get("status"),
            "error": res.get("error"),
            "results_dir": str(outcome.path),
            "report_html": str(rendered.html) if rendered else None,
            "report_md": str(rendered.markdown) if rendered else None,
            "report_error": render_error,
            "table": [{"metric": m, "value": v, "how": h} for m, v, h in rendered.table] if rendered else [],
            "results": res,
        }
        click.echo(json.dumps(doc, indent=2, default=str))
    else:
        if rendered is not None:
            _print_table(rendered.table, f"Results: {res.get('name')} ({res.get('status')})")
            console.print(f"report: {rendered.html}  (and {rendered.markdown.name}, plots/)", highlight=False)
        console.print(f"results: {outcome.path}/results.json", highlight=False)
        if render_error:
            err_console.print(f"[yellow]warning:[/] the report could not be rendered: {render_error}")
    err = res.get("error")
    if err:
        err_console.print(f"[bold red]error:[/] step {err['step']!r}: {err['message']}", highlight=False)
        if err.get("hint"):
            err_console.print(f"[yellow]hint:[/] {err['hint']}", highlight=False)
        err_console.print(f"results gathered so far are in {outcome.path}", highlight=False)
    if res.get("status") == "interrupted":
        sys.exit(130)
    if res.get("status") != "ok":
        sys.exit(1)


def _run(spec_file: Path, options: RunOptions, as_json: bool) -> None:
    from podhop.experiment.runner import Runner
    from podhop.experiment.spec import load_spec

    spec, text = load_spec(spec_file)
    if options.kubeconfig is None and (spec.cluster.kubeconfig is None or options.cluster):
        require_root()  # a podhop cluster of either kind: namespaces, mounts, its private kubeconfig
    with RichEvents() as events:
        outcome = Runner(spec, spec_file, text, options, events).run()
    _finish(outcome, as_json)


def where_options(func: F) -> F:
    """``--kind``, ``--kubeconfig`` and ``--context``: the cluster a run uses, over the spec's."""

    @functools.wraps(func)
    def wrapper(*args: Any, kind: str | None, kubeconfig: Path | None, context: str | None, **kw: Any) -> Any:
        if context is not None and kubeconfig is None:
            raise click.UsageError("--context needs --kubeconfig")
        if kubeconfig is not None and kind is not None:
            raise click.UsageError("give --kind (a cluster podhop creates) or --kubeconfig, not both")
        return func(*args, where=(kind, kubeconfig, context), **kw)

    wrapper = kubeconfig_options(
        wrapper, "Run on the Kubernetes cluster of this kubeconfig (any cluster, EKS included)."
    )
    wrapper = click.option(
        "--kind",
        type=click.Choice(["local", "kubernetes"]),
        default=None,
        help="Kind of the cluster created for the run (default: the spec's cluster.kind, local).",
    )(wrapper)
    return wrapper  # type: ignore[return-value]


@click.group("experiment")
def experiment_group() -> None:
    """Run experiments from a spec: load, metrics, hotspot, migration under traffic, report."""


@experiment_group.command("run")
@click.argument("spec_file", metavar="SPEC", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Results folder (default: the spec's, or results/<time>-<name>).",
)
@click.option(
    "--cluster",
    "cluster_name",
    default=None,
    help="Reuse this cluster if it exists, else create it under this name.",
)
@click.option("--keep-cluster", is_flag=True, help="Do not delete the cluster the run created.")
@click.option("-r", "--repetitions", type=click.IntRange(1, 50), default=None, help="Override the spec's.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document (results and table) on stdout."
)
@where_options
@handle_errors
def run_cmd(
    spec_file: Path,
    output: Path | None,
    cluster_name: str | None,
    keep_cluster: bool,
    repetitions: int | None,
    as_json: bool,
    where: tuple[str | None, Path | None, str | None],
) -> None:
    """Run the experiment described by SPEC (YAML) and write its results folder and report."""
    from podhop.experiment.runner import RunOptions

    if cluster_name is not None and where[1] is not None:
        raise click.UsageError("give --cluster or --kubeconfig, not both")
    _run(spec_file, RunOptions(output, cluster_name, keep_cluster, repetitions, *where), as_json)


@experiment_group.command("validate")
@click.argument("spec_file", metavar="SPEC", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the spec with every default filled in, as JSON.")
@handle_errors
def validate_cmd(spec_file: Path, as_json: bool) -> None:
    """Check SPEC without running anything; print it with defaults filled in."""
    from podhop.experiment.spec import load_spec

    spec, _ = load_spec(spec_file)
    if as_json:
        click.echo(json.dumps(spec.model_dump(mode="json"), indent=2))
        return
    import yaml

    click.echo(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False).rstrip())
    console.print(f"[green]✓[/] {spec_file} is valid", highlight=False)


@click.command("report")
@click.argument("results_dir", metavar="DIR", type=click.Path(path_type=Path, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the table and file paths as JSON.")
@handle_errors
def report_cmd(results_dir: Path, as_json: bool) -> None:
    """Re-render report.md, report.html and plots/ from a results folder (no cluster needed)."""
    from podhop.report.render import render_report

    if not (results_dir / "results.json").is_file():
        raise NotFoundError(
            f"{results_dir}: no results.json here", hint="pass a folder made by `experiment run`"
        )
    rendered = render_report(results_dir)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "report_html": str(rendered.html),
                    "report_md": str(rendered.markdown),
                    "plots": [str(p) for p in rendered.figures],
                    "table": [{"metric": m, "value": v, "how": h} for m, v, h in rendered.table],
                },
                indent=2,
            )
        )
        return
    _print_table(rendered.table, f"Results: {results_dir}")
    console.print(f"report: {rendered.html}  (and {rendered.markdown.name}, {len(rendered.figures)} plots)")


def seed_spec() -> Path:
    """``examples/seed.yaml`` of the source tree (or of the current directory)."""
    here = Path(__file__).resolve().parents[3] / "examples" / "seed.yaml"
    return here if here.is_file() else Path("examples") / "seed.yaml"


@click.command("demo")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Results folder (default: results/<time>-seed).",
)
@click.option(
    "--name",
    default=None,
    help="Cluster to create (or reuse if it exists); default demo, or demo-kube with --kind kubernetes.",
)
@click.option(
    "--keep", is_flag=True, help="Keep the cluster afterwards (default: delete what the demo created)."
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document (results and table) on stdout."
)
@where_options
@handle_errors
def demo_cmd(
    output: Path | None,
    name: str | None,
    keep: bool,
    as_json: bool,
    where: tuple[str | None, Path | None, str | None],
) -> None:
    """Run the seed experiment (examples/seed.yaml): NGINX × 10, hey, hottest pod moved under load —
    on a local cluster, a local Kubernetes cluster (--kind kubernetes) or yours (--kubeconfig)."""
    spec = seed_spec()
    if not spec.is_file():
        raise NotFoundError(f"{spec} not found", hint="run podhop demo from the source tree")
    from podhop.experiment.runner import RunOptions

    kind, kubeconfig, _ = where
    if kubeconfig is not None:
        if name is not None:
            raise click.UsageError("give --name (a podhop cluster) or --kubeconfig, not both")
    elif name is None:
        name = "demo-kube" if kind == "kubernetes" else "demo"
    _run(spec, RunOptions(output, name, keep, None, *where), as_json)


COMMANDS = [experiment_group, report_cmd, demo_cmd]
