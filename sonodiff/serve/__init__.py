"""Serving: the HTTP service (`sonodiff serve`), the web demo (`sonodiff demo`) and the listening test
(`sonodiff listen`). Web libraries are imported inside functions, so importing this package is cheap."""

from sonodiff.serve.scheduler import Cancelled, DeadlineExceeded, Job, QueueFull, Scheduler, StreamJob

__all__ = ["Scheduler", "Job", "StreamJob", "QueueFull", "Cancelled", "DeadlineExceeded"]
