"""Where podhop keeps things, as one documented settings object.

Why: every layer needs a few paths (the image store, the state database, the
CRIU wrapper, per-cluster directories). Putting them in one frozen dataclass,
read once from the environment, keeps tests able to redirect everything
(``PODHOP_HOME``, ``PODHOP_RUN``) and keeps paths from being spelled twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    """Filesystem locations used by podhop.

    Attributes:
        data_dir: persistent data: images, state database, CRIU private root,
            cluster stores. Env ``PODHOP_HOME``; default ``/var/lib/podhop``.
        run_dir: volatile runtime state: runc state, monitor sockets, pid
            files. Env ``PODHOP_RUN``; default ``/run/podhop``.
    """

    data_dir: Path
    run_dir: Path

    @classmethod
    def from_env(cls) -> Paths:
        return cls(
            data_dir=Path(os.environ.get("PODHOP_HOME", "/var/lib/podhop")),
            run_dir=Path(os.environ.get("PODHOP_RUN", "/run/podhop")),
        )

    @property
    def images_dir(self) -> Path:
        """OCI image layouts (``images/oci``) and their unpacked root filesystems."""
        return self.data_dir / "images"

    @property
    def state_db(self) -> Path:
        """SQLite database holding clusters, nodes, pods and services."""
        return self.data_dir / "state.db"

    @property
    def criu_root(self) -> Path:
        """Private root filesystem holding a working CRIU when the system's is too old."""
        return self.data_dir / "criu-root"

    @property
    def bin_dir(self) -> Path:
        """Wrapper scripts (``criu``) that podhop hands to runc."""
        return self.data_dir / "bin"

    @property
    def criu_wrapper(self) -> Path:
        return self.bin_dir / "criu"

    def cluster_dir(self, cluster: str) -> Path:
        """Persistent per-cluster directory: node stores, pod bundles, logs."""
        return self.data_dir / "clusters" / cluster

    def cluster_run_dir(self, cluster: str) -> Path:
        """Volatile per-cluster directory: runc root, monitor pid files."""
        return self.run_dir / "clusters" / cluster


def paths() -> Paths:
    """The paths in force for this process (read from the environment each call)."""
    return Paths.from_env()
