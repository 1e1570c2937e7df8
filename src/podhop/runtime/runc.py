"""The OCI runtime boundary: every runc call podhop makes goes through :class:`Runc`.

Why: one narrow interface to the runtime keeps the rest of the code free of
command lines and lets a different runtime slot in. Each cluster gets its own
runc state root (``--root``), so podhop never sees or touches containers it did
not make, and deleting a cluster can sweep exactly its own. runc's own errors go
to a JSON log (``--log``) so that a failure reports runc's message, not just an
exit code; the container's stdio belongs to the monitor (see ``monitor``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podhop import sh
from podhop.errors import CommandError, RuntimeFailure


@dataclass(frozen=True)
class Runc:
    """runc bound to one state root; ``criu`` is the CRIU binary runc should use."""

    root: Path
    log: Path
    criu: Path | None = None
    binary: str = "runc"

    def argv(self, *args: str) -> list[str]:
        base = [self.binary, "--root", str(self.root), "--log", str(self.log), "--log-format", "json"]
        if self.criu is not None:
            base += ["--criu", str(self.criu)]
        return base + list(args)

    def run_argv(self, container_id: str, bundle: Path, pid_file: Path) -> list[str]:
        """The ``runc run -d`` command a monitor executes to start a container."""
        return self.argv(
            "run", "--detach", "--bundle", str(bundle), "--pid-file", str(pid_file), container_id
        )

    def last_error(self) -> str:
        """The last error runc logged (its JSON log), for error messages."""
        try:
            lines = self.log.read_text().splitlines()
        except OSError:
            return ""
        for line in reversed(lines):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") in ("error", "fatal"):
                return str(entry.get("msg", ""))
        return ""

    def _call(self, *args: str, timeout: float = 60.0) -> str:
        try:
            return sh.run(self.argv(*args), timeout=timeout).stdout
        except CommandError as exc:
            detail = self.last_error() or exc.stderr
            raise RuntimeFailure(f"runc {args[0]} failed: {detail}") from exc

    def state(self, container_id: str) -> dict[str, Any] | None:
        proc = sh.run(self.argv("state", container_id), check=False)
        if proc.returncode != 0:
            return None
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def list(self) -> list[dict[str, Any]]:
        if not self.root.is_dir():
            return []
        out = self._call("list", "--format", "json").strip()
        items: list[dict[str, Any]] = json.loads(out) if out and out != "null" else []
        return items

    def kill(self, container_id: str, signal: str = "KILL", all_processes: bool = False) -> None:
        args = ["kill"] + (["--all"] if all_processes else []) + [container_id, signal]
        sh.ok(self.argv(*args))

    def delete(self, container_id: str, force: bool = True) -> None:
        sh.ok(self.argv("delete", *(["--force"] if force else []), container_id))

    def pause(self, container_id: str) -> None:
        self._call("pause", container_id)

    def resume(self, container_id: str) -> None:
        self._call("resume", container_id)
