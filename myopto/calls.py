"""One-line calls: `llm_text` for an answer, `llm_json` for a parsed JSON value."""

from __future__ import annotations

from typing import Any

from myopto.client import RoleLLM, get_llm
from myopto.errors import SchemaError
from myopto.output_format import JSON_OBJECT, is_pydantic_model, normalize_response_format
from myopto.parsing import NO_JSON, try_parse_json
from myopto.response import Response


def _messages(prompt: Any, system: str | None) -> list[dict[str, Any]]:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system is not None:
        messages = [{"role": "system", "content": system}, *messages]
    return messages


def _llm(role: str, llm: RoleLLM | None) -> RoleLLM:
    return llm if llm is not None else get_llm(role)


def llm_text(
    prompt: Any, role: str = "executor", *, system: str | None = None, llm: RoleLLM | None = None, **params: Any
) -> str:
    """Ask a role's model and return the answer text.

    `prompt` is a string (sent as the user message) or a list of chat messages; `system` adds a
    system message; other keywords are generation parameters (temperature, max_tokens, ...).
    """
    response: Response = _llm(role, llm)(_messages(prompt, system), **params)
    return response.text


async def allm_text(
    prompt: Any, role: str = "executor", *, system: str | None = None, llm: RoleLLM | None = None, **params: Any
) -> str:
    """Async twin of `llm_text`."""
    response: Response = await _llm(role, llm).acall(_messages(prompt, system), **params)
    return response.text


def llm_json(
    prompt: Any,
    json_schema: Any = None,
    role: str = "executor",
    *,
    system: str | None = None,
    llm: RoleLLM | None = None,
    **params: Any,
) -> Any:
    """Ask a role's model for JSON and return the parsed value.

    `json_schema` is the seed's wrapper `{"name", "schema", "strict"}`, a bare JSON schema, a
    pydantic model class (an instance of it is returned), or None for any JSON object. Backends
    with native structured output get `response_format`; the others get the schema as an
    instruction in the prompt. Raises `StructuredOutputError` when the answer is not valid JSON
    for the schema; the response is on the error. A schema that allows `null` (`{"type":
    ["object", "null"]}`, `anyOf` with null) can give None.
    """
    response_format = normalize_response_format(json_schema) if json_schema is not None else dict(JSON_OBJECT)
    response = _llm(role, llm)(_messages(prompt, system), response_format=response_format, **params)
    return _value(response, json_schema, response_format)


async def allm_json(
    prompt: Any,
    json_schema: Any = None,
    role: str = "executor",
    *,
    system: str | None = None,
    llm: RoleLLM | None = None,
    **params: Any,
) -> Any:
    """Async twin of `llm_json`."""
    response_format = normalize_response_format(json_schema) if json_schema is not None else dict(JSON_OBJECT)
    response = await _llm(role, llm).acall(_messages(prompt, system), response_format=response_format, **params)
    return _value(response, json_schema, response_format)


def _value(response: Response, json_schema: Any, response_format: Any) -> Any:
    # `parsed` is None both for no JSON and for a JSON null, which a nullable schema accepts
    # (the structured-output middleware has validated it): the text tells them apart
    is_null = (
        response.parsed is None
        and response_format.get("type") == "json_schema"
        and try_parse_json(response.text, default=NO_JSON) is None
    )
    if response.parsed is None and not is_null:
        raise SchemaError(
            f"the answer of {response.model!r} is not a JSON object: {response.text[:200]!r}", response=response
        )
    if is_pydantic_model(json_schema):
        try:
            return json_schema.model_validate(response.parsed)
        except Exception as error:  # pydantic.ValidationError, without importing pydantic
            raise SchemaError(
                f"the answer does not validate as {json_schema.__name__}: {error}", response=response
            ) from error
    return response.parsed
