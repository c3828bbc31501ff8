"""myopto: one clean way for LLM-driven optimisers to call any model.

Every call is a `Request` that runs down a chain of middleware to a backend and comes back as a
`Response`; the role router builds one chain per role. Importing myopto imports no SDK, torch
or transformers: backends import their dependencies on first use.
"""

from myopto.chunks import Chunk
from myopto.errors import (
    AuthenticationFailed,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BadRequest,
    BudgetExceeded,
    CacheMiss,
    CacheUnavailable,
    ConfigError,
    ConnectionFailed,
    DamagedCacheEntry,
    DeploymentsUnavailable,
    InvalidRequest,
    MalformedResponse,
    MyoptoError,
    RateLimited,
    SchemaError,
    ServerError,
    StreamBroken,
    StreamClosed,
    StructuredOutputError,
)
from myopto.logs import configure_logging
from myopto.pipeline import FunctionMiddleware, Middleware, Pipeline, as_middleware
from myopto.request import Request
from myopto.response import Response, Usage
from myopto.router import RoleConfig
from myopto.runs import current_run, run
from myopto.streaming import AsyncStream, Stream
from myopto.tracing import configure_tracing, flush_tracing
from myopto.utils import *  # noqa: F403 - the Trace-compatible API, re-exported
from myopto.utils import __all__ as _utils_all

__version__ = "0.1.0"

__all__ = [
    "AsyncStream",
    "AuthenticationFailed",
    "BackendError",
    "BackendTimeout",
    "BackendUnavailable",
    "BadRequest",
    "BudgetExceeded",
    "CacheMiss",
    "CacheUnavailable",
    "Chunk",
    "ConfigError",
    "ConnectionFailed",
    "DamagedCacheEntry",
    "DeploymentsUnavailable",
    "FunctionMiddleware",
    "InvalidRequest",
    "MalformedResponse",
    "Middleware",
    "MyoptoError",
    "Pipeline",
    "RateLimited",
    "Request",
    "Response",
    "RoleConfig",
    "SchemaError",
    "ServerError",
    "Stream",
    "StreamBroken",
    "StreamClosed",
    "StructuredOutputError",
    "Usage",
    "__version__",
    "as_middleware",
    "configure_logging",
    "configure_tracing",
    "current_run",
    "flush_tracing",
    "run",
]
# the Trace-compatible API and the parts of a Response (it repeats a few)
__all__ += [name for name in _utils_all if name not in __all__]
