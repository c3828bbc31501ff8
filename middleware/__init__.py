"""Middleware: one concept per module. Each is a callable `(request, call_next) -> Response`."""

from myopto.middleware.cache import Cache
from myopto.middleware.limits import Limits
from myopto.middleware.logging import Logging
from myopto.middleware.retry import Retry
from myopto.middleware.structured_output import StructuredOutput
from myopto.middleware.tracing import Tracing
from myopto.middleware.usage import Usage

__all__ = ["Cache", "Limits", "Logging", "Retry", "StructuredOutput", "Tracing", "Usage"]
