"""The runtime: dispatch loops, leases and the :class:`TaskHubWorker`."""

from duratask.worker.task_hub_worker import TaskHubWorker

__all__ = ["TaskHubWorker"]
