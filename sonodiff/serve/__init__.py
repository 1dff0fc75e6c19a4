"""Serving: the HTTP service (`sonodiff serve`). Web libraries are imported inside functions, so importing this package is cheap."""

from sonodiff.serve.scheduler import Cancelled, DeadlineExceeded, Job, QueueFull, Scheduler, StreamJob

__all__ = ["Cancelled", "DeadlineExceeded", "Job", "QueueFull", "Scheduler", "StreamJob"]
