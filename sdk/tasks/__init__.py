"""Task environments: families of related learning problems (one task = one device)."""
from metaedge.sdk.tasks.demod import DemodConfig, DemodTasks, TaskBatch, qam_constellation

__all__ = ["DemodConfig", "DemodTasks", "TaskBatch", "qam_constellation"]
