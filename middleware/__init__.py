"""Middleware: one concept per module. Each is a callable `(request, call_next) -> Response`."""

from myopto.middleware.structured_output import StructuredOutput
from myopto.middleware.usage import Usage

__all__ = ["StructuredOutput", "Usage"]
