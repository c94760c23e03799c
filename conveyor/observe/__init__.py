"""Looking at the work: progress bars, records as rows and data frames, the job log (CSV or
JSONL), and the Gantt timeline."""

from conveyor.observe.timeline import plot

__all__ = ["plot"]
