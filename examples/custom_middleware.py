"""A user's own middleware, five lines, inserted for one role only.

`prefix_for_optimizer` adds a system message to every optimizer request; `count_calls` counts
the executor's calls. Each sees its own role's requests and none of the other's.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from myopto.testing import FakeOpenAIServer
from myopto.utils import get_llm, set_role_config

calls = {"executor": 0}


def prefix_for_optimizer(request, call_next):
    """Every optimizer request starts with the team's house rules."""
    rules = {"role": "system", "content": "Be concise. Propose one change at a time."}
    return call_next(request.replace(messages=[rules, *request.messages]))


def count_calls(request, call_next):
    calls[request.role] += 1
    return call_next(request)


def main() -> None:
    with FakeOpenAIServer() as server:
        set_role_config(
            "optimizer", backend="CustomLLM", model="opt", base_url=server.url, middleware=[prefix_for_optimizer]
        )
        set_role_config("executor", backend="CustomLLM", model="exe", base_url=server.url, middleware=[count_calls])
        print(get_llm("optimizer").describe())
        get_llm("optimizer")("How should the prompt change?")
        print("optimizer's request as the server saw it:", server.last_request.messages)
        get_llm("executor")("Solve the task.")
        print("executor's request as the server saw it:", server.last_request.messages)
        print("executor calls counted:", calls["executor"])


if __name__ == "__main__":
    main()
