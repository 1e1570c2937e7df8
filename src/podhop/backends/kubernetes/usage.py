"""Node and pod usage from the kubelets' resource metrics, as rates over the samples' own times.

Why: the kubelet's ``/metrics/resource`` gives cumulative CPU seconds stamped
with when cAdvisor last read them — once per housekeeping interval (10 s by
default; the Kubernetes kind sets 1 s). A rate over two scrapes divided by
the wall-clock time between them reads 0 when nothing was refreshed and ten
times too much when a refresh fell between them (a 2-core machine showed
16,639m). So each series' rate is its value's change over its timestamp's
change, and it is kept between calls: a sampler calling every second always
reports the latest interval's rate. ``top`` waits one window and scrapes
again, so that a kubelet refreshing within the window gives a fresh rate.
On the Kubernetes kind every kubelet reports the host's root cgroup as its
node; the kind labels its nodes ``podhop.io/shared-host=true``, and such a
node's usage is the sum of its pods'.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from podhop.backends.base import Node, NodeUsage, PodUsage, Sample

Key = tuple[str, str]  # (namespace, pod); ("", "") for the node itself
#: ``{metric: {(namespace, pod): (value, time_s)}}``
Series = dict[str, dict[Key, tuple[float, float]]]

_SERIES = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+(-?\d+))?")
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')
NODE_CPU, POD_CPU = "node_cpu_usage_seconds_total", "pod_cpu_usage_seconds_total"
NODE_MEMORY, POD_MEMORY = "node_memory_working_set_bytes", "pod_memory_working_set_bytes"
#: A node label: this node's kubelet reports the whole host as the node (the Kubernetes kind's
#: kubelets all share the host's root cgroup), so its usage is the sum of its pods'.
SHARED_HOST = "podhop.io/shared-host"


def parse_resource_metrics(text: str, scraped_at: float) -> Series:
    """The kubelet's ``/metrics/resource`` (Prometheus text, timestamps in ms; ``scraped_at`` for a
    series without one). Container-level series are summed into their pod (the latest time kept)."""
    out: Series = {}
    for line in text.splitlines():
        match = _SERIES.match(line)
        if match is None or line.startswith("#"):
            continue
        name, labels_text, value_text, stamp = match.groups()
        labels = dict(_LABEL.findall(labels_text or ""))
        try:
            value = float(value_text)
        except ValueError:
            continue
        t = int(stamp) / 1000 if stamp else scraped_at
        key = (labels.get("namespace", ""), labels.get("pod", ""))
        series = out.setdefault(name, {})
        old_value, old_t = series.get(key, (0.0, 0.0))
        series[key] = (old_value + value, max(old_t, t))
    return out


class KubeletUsage:
    """Rates of the kubelets' CPU counters, remembered between samples."""

    def __init__(self, scrape: Callable[[str], str]) -> None:
        self.scrape = scrape  # node -> its /metrics/resource text
        self.last: dict[tuple[str, str, Key], tuple[float, float]] = {}
        self.rates: dict[tuple[str, str, Key], float] = {}  # cores
        self.latest: dict[str, Series] = {}

    def update(self, node: str, series: Series) -> None:
        self.latest[node] = series
        for metric in (NODE_CPU, POD_CPU):
            for key, (value, t) in series.get(metric, {}).items():
                prev = self.last.get((node, metric, key))
                if prev is not None and t <= prev[1]:
                    continue  # not refreshed since
                if prev is not None and value >= prev[0]:
                    self.rates[(node, metric, key)] = (value - prev[0]) / (t - prev[1])
                self.last[(node, metric, key)] = (value, t)

    def _scrape_all(self, nodes: dict[str, Node]) -> None:
        for n in nodes:
            self.update(n, parse_resource_metrics(self.scrape(n), time.time()))

    def sample(self, nodes: dict[str, Node], where: dict[Key, str], window_s: float) -> Sample:
        """Scrape every node now and after ``window_s``; usage at the latest known rates (a node
        labelled :data:`SHARED_HOST` counts as the sum of its pods)."""
        t0 = time.monotonic()
        self._scrape_all(nodes)
        time.sleep(max(0.0, window_s - (time.monotonic() - t0)))
        self._scrape_all(nodes)

        def cpu_m(node: str, metric: str, key: Key) -> int:
            return max(0, round(self.rates.get((node, metric, key), 0.0) * 1000))

        node_usage = [
            NodeUsage(
                n,
                cpu_m(n, NODE_CPU, ("", "")),
                int(self.latest[n].get(NODE_MEMORY, {}).get(("", ""), (0.0, 0.0))[0]),
                info.cpu_m,
                info.memory_b,
            )
            for n, info in nodes.items()
        ]
        pod_usage = [
            PodUsage(
                key[0],
                key[1],
                where.get(key, n),
                cpu_m(n, POD_CPU, key),
                int(self.latest[n].get(POD_MEMORY, {}).get(key, (0.0, 0.0))[0]),
            )
            for n in nodes
            for key in self.latest[n].get(POD_CPU, {})
        ]
        node_usage = [
            NodeUsage(
                u.name,
                sum(p.cpu_m for p in pod_usage if p.node == u.name),
                sum(p.memory_b for p in pod_usage if p.node == u.name),
                u.cpu_capacity_m,
                u.memory_capacity_b,
            )
            if nodes[u.name].labels.get(SHARED_HOST) == "true"
            else u
            for u in node_usage
        ]
        return Sample(window_s=max(time.monotonic() - t0, 1e-3), nodes=node_usage, pods=pod_usage)
