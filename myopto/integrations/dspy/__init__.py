"""DSPy programs on myopto roles: `dspy.configure(lm=myopto.integrations.dspy.lm("executor"))`.

Every call a DSPy program makes (any adapter, `n` candidates, native tool calls, logprobs,
async, `dspy.streamify`) runs down the role's chain: myopto's cache (disk or Redis, replay
mode, single flight across processes), retry, fleet rate limits, budgets, usage ledger (by role
and by run), logs and tracing. DSPy's own cache and retries are off for these LMs, so there is
one cache and one retry policy; `lm(role, cache=True, num_retries=3)` turns DSPy's back on.
`lm.history` and `dspy.inspect_history()` work as for any DSPy LM, with myopto's cost in each
entry. When an adapter asks for JSON (`JSONAdapter`: the signature's output fields as a JSON
schema) on a LocalSLM role, the model decodes under that schema's grammar, so even a 135M model's
answers parse. Use `run(...)` here in place of `myopto.run` around DSPy code that starts threads
(`dspy.Evaluate`, optimisers): DSPy's threads carry DSPy's settings, not Python's context.

Why a custom engine, not a `BaseLM` subclass: DSPy 3.4 offers both. `BaseLM.forward` subclasses
are deprecated for 3.5, get no streaming (`dspy.streamify` needs an engine's `stream`), and
leave history and usage to the subclass. The engine contract (`dspy.LM(model, engine=...,
async_engine=...)`: `complete(Request) -> Response` and `stream(Request)` over `dspy.lm15`
types) is the one DSPy 3.5 keeps, and DSPy itself runs the LM around it (adapters, history,
callbacks, usage tracking, saving). Its one-candidate-per-call rule would make `n=3` three
identical requests (one answer from a cache, three backend calls without one), and DSPy strips
`rollout_id` before an engine sees it; so `RoleLM`, a thin `dspy.LM` subclass, tells the engine
each call's `n` and rollout (`call_scope`): one request for `n` choices, one cache entry per
rollout.

Modules: `role_lm` (`RoleLM`, `lm`), `engine` (`RoleEngine`, `AsyncRoleEngine`), `call_scope`
(per-call `n`, rollout and run), `translation` (lm15 types and errors to myopto's and back).
Importing this package imports `dspy` (the `[dspy]` extra); `import myopto` never does.
"""

from __future__ import annotations

from .call_scope import run
from .engine import AsyncRoleEngine, RoleEngine
from .role_lm import RoleLM, lm

__all__ = ["AsyncRoleEngine", "RoleEngine", "RoleLM", "lm", "run"]
