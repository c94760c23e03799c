"""``GET /metrics``: the queue in Prometheus's text format (prometheus_client), read from the
backend at each scrape, in a registry of the app's own.

- ``conveyor_jobs{status}``: jobs in each status; ``conveyor_queue_depth``: jobs waiting;
- ``conveyor_workers{state}``: workers alive and lost;
- ``conveyor_job_wait_seconds{task}`` and ``conveyor_job_run_seconds{task}``: histograms of the
  jobs the queue holds (wait: submitted to started; run: the last attempt's runtime). They
  describe the stored jobs, so a purge lowers them (Prometheus reads that as a counter reset).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from conveyor import operations
from conveyor.job import Status

if TYPE_CHECKING:
    from conveyor.queue import Queue

#: the histograms' bucket bounds, in seconds
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def buckets(values: Iterable[float]) -> list[tuple[str, float]]:
    """Cumulative bucket counts of ``values`` (with +Inf)."""
    ordered = sorted(values)
    found, n = [], 0
    for bound in BUCKETS:
        while n < len(ordered) and ordered[n] <= bound:
            n += 1
        found.append((str(float(bound)), float(n)))
    found.append(("+Inf", float(len(ordered))))
    return found


def histogram(
    name: str, documentation: str, by_task: dict[str, list[float]]
) -> HistogramMetricFamily:
    """A histogram with a series per task."""
    family = HistogramMetricFamily(name, documentation, labels=["task"])
    for task, values in sorted(by_task.items()):
        family.add_metric([task], buckets(values), sum_value=float(sum(values)))
    return family


class QueueCollector(Collector):
    """Reads the queue at every scrape."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def collect(self) -> Iterator[Metric]:
        queue = self.queue
        counts = operations.counts(queue)
        jobs = GaugeMetricFamily("conveyor_jobs", "Jobs in each status.", labels=["status"])
        for status, n in counts.items():
            jobs.add_metric([status], n)
        yield jobs
        yield GaugeMetricFamily(
            "conveyor_queue_depth", "Jobs waiting to start.", value=counts[Status.WAITING.value]
        )
        workers = operations.workers(queue)
        lost = operations.lost_workers(queue, workers)
        states = GaugeMetricFamily("conveyor_workers", "Workers by state.", labels=["state"])
        states.add_metric(["alive"], len(workers) - len(lost))
        states.add_metric(["lost"], len(lost))
        yield states
        waits: dict[str, list[float]] = defaultdict(list)
        runs: dict[str, list[float]] = defaultdict(list)
        for record in queue.jobs():
            if record.started is not None and record.submitted is not None:
                waits[record.task].append(
                    max(0.0, (record.started - record.submitted).total_seconds())
                )
            if record.runtime is not None and record.ended is not None:
                runs[record.task].append(record.runtime)
        yield histogram(
            "conveyor_job_wait_seconds", "Seconds from submit to start, per task.", waits
        )
        yield histogram("conveyor_job_run_seconds", "Seconds of the last attempt, per task.", runs)


def registry_for(queue: Queue) -> CollectorRegistry:
    """A registry of its own holding the queue's metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector(queue))
    return registry


def samples(families: Sequence[Metric], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The values of sample ``name`` by their sorted labels (for tests and scripts)."""
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in families
        for sample in family.samples
        if sample.name == name
    }
