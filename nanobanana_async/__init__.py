"""nanobanana_async: an asyncio SDK for the Nano Banana Pro queue API."""

import contextlib
import logging

from ._batch._engine import BatchStream
from ._batch._types import BatchEvent, BatchOptions, EventKind, Outcome
from ._client import Client, ClientStats
from ._config import Limits, TaskRetry, Timeout
from ._http._retry import RetryPolicy
from ._http._shared import LocalRateLimit, RedisRateLimit
from ._http._transport import HttpEvent
from ._jobs import Job
from ._polling._policy import PollPolicy
from ._runtime import TaskUpdates
from ._version import __version__
from .download import DownloadedFile, Downloader, DownloadError
from .errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    BatchAbortedError,
    ClientStateError,
    ConnectError,
    DownloadTimeoutError,
    InsufficientCreditsError,
    JournalError,
    JournalStateError,
    NanoBananaError,
    NoImageError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    RequestTimeoutError,
    ResponseTooLargeError,
    ServerError,
    SubmissionUnknownError,
    TaskCancelledError,
    TaskError,
    TaskFailedError,
    TimeoutError,
    TransportError,
    UnprocessableEntityError,
    ValidationError,
)
from .journal import Journal, JournalMismatchError
from .models import (
    AspectRatio,
    GenerationRequest,
    GenerationResult,
    ImageSize,
    LogEntry,
    Modality,
    Output,
    TaskState,
    TaskStatus,
    Ticket,
)

__all__ = [
    "BatchAbortedError",
    "BatchEvent",
    "BatchOptions",
    "BatchStream",
    "EventKind",
    "Outcome",
    "Client",
    "ClientStats",
    "DownloadError",
    "DownloadTimeoutError",
    "DownloadedFile",
    "Downloader",
    "Journal",
    "JournalError",
    "JournalMismatchError",
    "JournalStateError",
    "HttpEvent",
    "Job",
    "Limits",
    "PollPolicy",
    "RetryPolicy",
    "LocalRateLimit",
    "RedisRateLimit",
    "TaskRetry",
    "TaskUpdates",
    "Timeout",
    "APIStatusError",
    "AspectRatio",
    "AuthenticationError",
    "BadRequestError",
    "ClientStateError",
    "ConnectError",
    "GenerationRequest",
    "GenerationResult",
    "ImageSize",
    "InsufficientCreditsError",
    "LogEntry",
    "Modality",
    "NanoBananaError",
    "NoImageError",
    "NotFoundError",
    "Output",
    "PermissionDeniedError",
    "ProtocolError",
    "RateLimitError",
    "RequestTimeoutError",
    "ResponseTooLargeError",
    "ServerError",
    "SubmissionUnknownError",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TaskState",
    "TaskStatus",
    "Ticket",
    "TimeoutError",  # deprecated alias of RequestTimeoutError
    "TransportError",
    "UnprocessableEntityError",
    "ValidationError",
    "__version__",
]

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and not isinstance(_obj, str):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = __name__
del _name, _obj

# A library logs; the application decides where it goes (and Python's last-resort handler
# must not print the SDK's records to stderr unasked).
logging.getLogger(__name__).addHandler(logging.NullHandler())
