"""One pod's migration on the local kind: the phases the engine calls, on namespaces, runc and CRIU.

Why: the engine knows the order and the undo discipline; this driver knows
how each phase is done here. ``prepare`` makes the target's sandbox, starts
the transfer ends and CRIU's page-server connections (checked) ahead of any freeze;
``freeze`` stops the source with the cgroup freezer; ``detach`` takes a
clone's source out of its services while CRIU dumps it; ``dump`` checkpoints
(memory straight to the target's page server, or, post-copy, to a page
server on the source the target will pull from); ``transfer`` sends CRIU's
other images and the root filesystem changes over the link; ``restore``
brings each container up on the target from its own images, in the target
sandbox's one network namespace; ``switch`` moves the pod's record and
endpoints. After the commit, ``pull`` waits for post-copy's memory,
``drain`` lets a clone's source finish, ``cleanup`` removes the source.

The container-level mechanics are in :mod:`podhop.backends.local.moves`.
"""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from podhop.backends.base import Deadline
from podhop.backends.local import carry
from podhop.backends.local import moves as steps
from podhop.backends.local import pods as podops
from podhop.backends.local import services as svcops
from podhop.backends.local.cluster import LocalCluster
from podhop.errors import PodhopError
from podhop.migrate.plan import MigrationPlan, Options, Strategy
from podhop.migrate.report import MoveFigures
from podhop.net import netns
from podhop.runtime import cgroups, criu
from podhop.store import PodRecord


class LocalMigration:
    """The :class:`~podhop.backends.base.MigrationDriver` of the local kind."""

    def __init__(
        self,
        cluster: LocalCluster,
        plan: MigrationPlan,
        record: PodRecord,
        options: Options,
        reserved: set[str] | None = None,
    ) -> None:
        self.cluster, self.plan, self.pod, self.options = cluster, plan, record, options
        self.id = secrets.token_hex(4)  # names this migration's endpoint overrides
        target_node = cluster.node(plan.target)
        sandbox = secrets.token_hex(3)
        self.new = dataclasses.replace(
            record,
            node=plan.target,
            sandbox=sandbox,
            netns=cluster.layout.pod_netns(record.name, sandbox),
            ip=podops.free_ip(cluster, target_node, frozenset(reserved or ())),
            containers=[],
            started=None,
        )
        if reserved is not None:  # migrations prepared together must not take the same address
            reserved.add(self.new.ip)
        self.current_ip = record.ip
        mid = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(2)
        source_node = cluster.node(record.node)
        self.moves: list[steps.ContainerMove] = []
        for c in record.containers:
            tc = podops.container_record(cluster, self.new, c.name, c.image, list(c.ports))
            tc.external = list(c.external)
            src_dir = cluster.node_dir(record.node) / "checkpoints" / f"{record.name}-{mid}" / c.name
            dst_dir = cluster.node_dir(plan.target) / "checkpoints" / f"{record.name}-{mid}" / c.name
            self.moves.append(
                steps.ContainerMove(
                    source=c,
                    target=tc,
                    src=steps.Side(source_node, src_dir / "images", src_dir / "work"),
                    dst=steps.Side(target_node, Path(tc.bundle) / "checkpoint", dst_dir / "work"),
                )
            )
        self.transfers: list[carry.Transfer] = []
        self.lazy_ports: list[int] = []
        self.prepared: svcops.PreparedSwitch | None = None  # cold, post-copy: the switch, ready

    # ---------------------------------------------------------------- what the engine reads

    @property
    def new_ip(self) -> str:
        return self.new.ip

    @property
    def new_pod(self) -> str:
        return self.new.name

    def probe_target(self) -> Callable[[], tuple[str, int]] | None:
        """The pod's service VIP and port if a service selects it, else the pod's current address."""
        service = next(
            (
                s
                for s in self.cluster.store.services(self.cluster.name)
                if s.namespace == self.pod.namespace
                and svcops.selects(s.selector, self.pod.labels)
                and s.ports
            ),
            None,
        )
        if service is not None:
            vip, vport = service.cluster_ip, int(service.ports[0]["port"])
            return lambda: (vip, vport)
        ports = [p for c in self.pod.containers for p in c.ports]
        if not ports:
            return None
        return lambda: (self.current_ip, ports[0])

    def figures(self) -> list[MoveFigures]:
        return [
            MoveFigures(
                mv.source.name,
                transferred_bytes=mv.transferred_bytes,
                page_bytes=mv.page_bytes,
                image_bytes=mv.image_bytes,
                criu_stats=mv.stats,
            )
            for mv in self.moves
        ]

    # ---------------------------------------------------------------- phases up to the commit

    def prepare(self, undo: ExitStack, deadline: Deadline) -> None:
        cluster = self.cluster
        if cluster.runc.criu is not None:
            criu.ensure_kdat_cache(cluster.runc.criu)  # this boot's, or made now (see runtime.criu)
        podops.create_sandbox(cluster, cluster.node(self.plan.target), self.new)
        undo.callback(podops.delete_sandbox, cluster, self.new)
        # Last undo to run: whatever endpoint overrides this migration made go, in one sync.
        undo.callback(svcops.clear_overrides, cluster, f"{self.id}/both", f"{self.id}/detach")
        self.transfers = [carry.start_transfer(mv, deadline("prepare"), undo) for mv in self.moves]
        if self.plan.strategy is not Strategy.CLONE:  # its switch ends (cold) or is in the downtime
            self.prepared = svcops.PreparedSwitch.start(cluster)
            undo.callback(self.prepared.close)
        for mv in self.moves:
            memory = self._memory(mv)
            if memory is not None:  # unknown: the images stay on the node's disk
                carry.images_in_memory(mv, memory, undo)
            steps.prestart_monitor(mv, undo)
            steps.configure_target(mv, cluster, self.new)
            # Pages stream to a page server while CRIU dumps only for much memory: CRIU's client
            # corks its socket, and its closing hand-shake then waits out the kernel's 200 ms cork
            # ceiling, a fixed cost that pays off only when the copy it overlaps with is longer.
            streams = memory is None or memory >= self.options.stream_pages_from_b
            if self.plan.strategy is Strategy.POSTCOPY:
                steps.secure_links(mv, undo)
            elif streams:
                steps.link_pages(cluster, mv, undo, deadline("prepare"))

    def _memory(self, mv: steps.ContainerMove) -> int | None:
        """The container's memory working set (what its checkpoint will hold, about)."""
        used = cgroups.usage(podops.container_cgroup(self.cluster, self.pod, mv.source.name))
        return used.memory_working_set_b if used else None

    def freeze(self, undo: ExitStack, deadline: Deadline) -> None:
        for mv in self.moves:
            steps.freeze(self.cluster, mv.source, self.pod, undo)

    def detach(self, undo: ExitStack, deadline: Deadline) -> None:
        # CRIU freezes the source while it dumps; with other replicas serving, new connections
        # should not wait for it. The target joins after restore.
        svcops.set_override(self.cluster, f"{self.id}/detach", exclude=(self.pod,))

    def dump(self, undo: ExitStack, deadline: Deadline) -> None:
        for mv in self.moves:
            if self.plan.strategy is Strategy.POSTCOPY:
                self.lazy_ports.append(steps.lazy_dump(self.cluster, mv, self.pod, undo, deadline("dump")))
            else:
                steps.dump_leave_running(self.cluster, mv, self.pod, undo, deadline("dump"))

    def transfer(self, undo: ExitStack, deadline: Deadline) -> None:
        for mv, t in zip(self.moves, self.transfers, strict=True):
            sent = t.go(deadline("transfer"))
            if self.plan.strategy is not Strategy.POSTCOPY and mv.page_link is None:
                sent -= mv.page_bytes  # the pages went in this stream: counted once, as memory
            mv.transferred_bytes += max(0, sent)

    def restore(self, undo: ExitStack, deadline: Deadline) -> None:
        lazy = self.plan.strategy is Strategy.POSTCOPY
        if lazy:
            wrapper = self.cluster.runc.criu
            assert wrapper is not None
        for i, mv in enumerate(self.moves):
            if lazy:
                mv.dst.work.mkdir(parents=True, exist_ok=True)
                assert mv.tls is not None and wrapper is not None
                daemon = criu.lazy_pages(
                    wrapper,
                    mv.dst.netns_path,
                    mv.src.node.ip,
                    self.lazy_ports[i],
                    mv.dst.images,
                    mv.dst.work,
                    mv.tls,
                )
                undo.callback(daemon.stop)
                mv.lazy_daemon = daemon
            steps.restore(self.cluster, mv, self.new, undo, deadline("restore"), lazy=lazy)

    def switch(self, undo: ExitStack, deadline: Deadline) -> None:
        """Endpoints (and the pod's record) move to the target; undone by putting the source back."""
        cluster = self.cluster
        self.new.containers = [mv.target for mv in self.moves]
        self.new.started = self.pod.started
        if self.plan.strategy is Strategy.CLONE:
            svcops.set_override(cluster, f"{self.id}/both", add=(self.new,))  # both serve for a moment
        cluster.store.put_pod(self.new)
        undo.callback(cluster.store.put_pod, self.pod)
        if self.prepared is not None:  # no overrides of its own; the source's chains go at cleanup
            svcops.switch_prepared(cluster, self.prepared)
        else:
            svcops.clear_overrides(cluster, f"{self.id}/both", f"{self.id}/detach")
        self.current_ip = self.new.ip
        if self.plan.strategy is Strategy.COLD:  # the source is frozen for good: its connections are lost
            svcops.forget_endpoint(cluster, self.pod.ip)

    def discard(self) -> None:
        """After a failed attempt: its checkpoint files and CRIU logs, on both nodes."""
        for mv in self.moves:
            carry.release_images(mv)

    # ---------------------------------------------------------------- after the commit (best effort)

    def pull(self, deadline: Deadline) -> list[str]:
        """Post-copy: wait until the target has pulled all memory and the source's CRIU is done."""
        warnings = []
        for mv in self.moves:
            try:
                if mv.dump_proc is not None:
                    mv.dump_proc.wait(timeout=max(1.0, deadline("pull")))
                if mv.lazy_daemon is not None:
                    mv.lazy_daemon.wait(timeout=30)
            except (subprocess.TimeoutExpired, criu.CriuError, PodhopError) as exc:
                warnings.append(f"post-copy of {mv.source.name} did not finish cleanly: {exc}")
            # A lazy dump's stats-dump holds no page counts (and a bogus frozen time), so the memory
            # the target pulled is read from the source's pagemaps instead.
            mv.page_bytes = criu.pagemap_bytes(mv.src.images)
        return warnings

    def drain(self, deadline: Deadline) -> list[str]:
        """Clone: the source finishes what it has in flight (its image's stop signal), then goes."""
        return self._stop_sources(self.options.drain_s)

    def cleanup(self, deadline: Deadline) -> list[str]:
        """The source is removed (a frozen one killed without running again), and the checkpoint files."""
        warnings = self._stop_sources(0.0)
        podops.delete_sandbox(self.cluster, self.pod)
        if self.prepared is not None:  # the prepared switch left the source's chains behind
            svcops.sync(self.cluster)
        if self.plan.strategy is not Strategy.COLD:  # cold forgot them at its switch already
            try:  # connections still translated to the source's address would lead into nowhere
                svcops.forget_endpoint(self.cluster, self.pod.ip)
            except PodhopError as exc:
                warnings.append(f"forgetting the source's connections: {exc}")
        for mv in self.moves:
            mv.image_bytes = criu.dir_bytes(mv.dst.images)
            carry.release_images(mv)
        return warnings

    def _stop_sources(self, grace: float) -> list[str]:
        """Stop each source container; with a grace (a clone's drain), until it has exited or owes no
        connection an answer (:func:`podhop.net.netns.unanswered_connections`: connections a client
        dialled and never used held NGINX's graceful stop, measured: drains of 0.15-8.6 s)."""
        warnings = []
        for mv in self.moves:
            if mv.stopped:
                continue
            try:
                if self.plan.strategy is Strategy.COLD:
                    steps.kill_frozen_source(self.cluster, mv.source)
                podops.stop_container(self.cluster, mv.source, grace, done=_answered_all)
            except PodhopError as exc:
                warnings.append(f"stopping the source {mv.source.name}: {exc}")
            mv.stopped = True
        return warnings


def _answered_all(pid: int) -> bool:
    """Whether the process's pod has no connection left that may still carry an answer."""
    return netns.unanswered_connections(pid) == 0
