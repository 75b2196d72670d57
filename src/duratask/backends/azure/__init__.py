"""The Azure Storage task hub store (``azure://``): tables, queues and blobs of one storage
account; needs ``pip install 'duratask[azure]'``."""

from duratask.backends.azure._store import AzureOrchestrationService
from duratask.backends.azure._target import AzureTarget, parse_azure_url

__all__ = ["AzureOrchestrationService", "AzureTarget", "parse_azure_url"]
