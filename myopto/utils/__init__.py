"""The Trace-compatible surface of myopto: role routing, one-line calls, usage accounting."""

from myopto.calls import allm_json, allm_text, llm_json, llm_text
from myopto.choice import Choice, ChoiceLogprobs, Function, Message, TokenLogprob, ToolCall, TopLogprob
from myopto.client import RoleLLM, get_llm
from myopto.parsing import extract_text, try_parse_json
from myopto.price_map import prefer_bundled_price_map
from myopto.response import CompletionTokensDetails, PromptTokensDetails
from myopto.router import (
    add_middleware,
    clear_role_config,
    remove_middleware,
    set_role_config,
    set_role_models,
)
from myopto.usage import (
    configure_usage,
    get_cost_by_role,
    get_tokens_by_role,
    get_total_cost,
    get_usage_summary,
    print_usage_summary,
    reset_usage,
)

# Run when myopto is imported: a LiteLLM imported afterwards loads the price map it ships, never
# one from the network, so costs are the same on every run (see myopto/price_map.py).
prefer_bundled_price_map()

# The Trace-compatible API, and the parts of a Response (for type hints and isinstance checks:
# `Choice`, `Message`, `ToolCall`, the logprobs and the usage details).
__all__ = [
    "Choice",
    "ChoiceLogprobs",
    "CompletionTokensDetails",
    "Function",
    "Message",
    "PromptTokensDetails",
    "RoleLLM",
    "TokenLogprob",
    "ToolCall",
    "TopLogprob",
    "add_middleware",
    "allm_json",
    "allm_text",
    "clear_role_config",
    "configure_usage",
    "extract_text",
    "get_cost_by_role",
    "get_llm",
    "get_tokens_by_role",
    "get_total_cost",
    "get_usage_summary",
    "llm_json",
    "llm_text",
    "print_usage_summary",
    "remove_middleware",
    "reset_usage",
    "set_role_config",
    "set_role_models",
    "try_parse_json",
]
