"""The OpenAPI 3.1 document of the tenant API (``GET /v1/openapi.json``).

Request bodies are the JSON schemas of the request models (serving/engine/request_models.py)
that the gateway validates with (serving/gateway/validation.py), so the published schema and
what the gateway accepts cannot drift apart. Schemathesis runs against this document in the
test suite (tests/serving/gateway/test_schemathesis.py).
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema

from serving.engine.request_validation import BY_ENDPOINT
from serving.gateway.validation import MAX_COST_PATTERN, MAX_HEADER_NUMBER_CHARS

# Rules that span fields, which JSON Schema here does not express; a schema-valid body may
# still get a 400 naming one of these (parameter or error code).
CROSS_FIELD_PARAMS = frozenset(
    {
        "context_length_exceeded",
        "stream_options",
        "top_logprobs",
        "messages",
        "prompt",
        "tool_choice",  # "required" or a named function needs tools, the name one of them
        "tool_choice.function.name",
        "unsupported_capability",  # tools or images need a deployment able to take them
    }
)

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

_USAGE = {
    "type": "object",
    "properties": {
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
    },
}


def _completion_response(kind: str, choice: dict[str, Any]) -> dict[str, Any]:
    """A chat or text completion body: ``kind`` is its ``object``, ``choice`` one choice."""
    return {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": kind},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object", **choice}},
            "usage": _USAGE,
        },
    }


RESPONSES: dict[str, dict[str, Any]] = {
    "chat.completions": _completion_response(
        "chat.completion",
        {
            "required": ["index", "message", "finish_reason"],
            "properties": {
                "index": {"type": "integer"},
                "message": {"type": "object"},
                "finish_reason": {"type": ["string", "null"]},
            },
        },
    ),
    "completions": _completion_response(
        "text_completion",
        {
            "required": ["index", "text"],
            "properties": {"index": {"type": "integer"}, "text": {"type": "string"}},
        },
    ),
    "embeddings": {
        "type": "object",
        "required": ["object", "data", "model"],
        "properties": {
            "object": {"const": "list"},
            "model": {"type": "string"},
            "data": {"type": "array", "items": {"type": "object"}},
            "usage": _USAGE,
        },
    },
}

_COUNTS = {
    k: {"type": "integer", "minimum": 0}
    for k in ("requests", "input_tokens", "output_tokens", "cached_tokens", "cost_micro_usd")
}
USAGE = {
    "type": "object",
    "required": ["object", "start", "end", "data", "total"],
    "properties": {
        "object": {"const": "usage"},
        "start": {"type": "string"},
        "end": {"type": "string"},
        "data": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["date", "model", *_COUNTS, "unit_prices"],
                "properties": {
                    "date": {"type": "string"},
                    "model": {"type": "string"},
                    **_COUNTS,
                    "unit_prices": {"type": "object"},
                },
            },
        },
        "total": {"type": "object", "required": list(_COUNTS), "properties": _COUNTS},
    },
}

_MODEL = {
    "type": "object",
    "required": ["id", "object"],
    "properties": {"id": {"type": "string"}, "object": {"const": "model"}},
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


_ERROR_RESPONSES = {
    str(code): {
        "description": text,
        "content": _json({"$ref": "#/components/schemas/Error"}),
    }
    for code, text in (
        (400, "Invalid request: the message names the parameter."),
        (401, "Missing or invalid API key."),
        (403, "The tenant is suspended."),
        (404, "Unknown model."),
        (413, "Body larger than the limit."),
        (429, "Rate limit reached or budget exhausted (code insufficient_quota)."),
        (502, "The upstream failed."),
        (503, "No deployment is serving the model right now."),
        (504, "The upstream timed out."),
    )
}

# The request headers the gateway reads, beside Authorization (the security scheme). The
# max-cost pattern is the one parse_max_cost_header checks, so schemathesis fuzzes both sides.
REQUEST_HEADERS: list[dict[str, Any]] = [
    {
        "name": "X-Request-Id",
        "in": "header",
        "required": False,
        "description": "Your label for the request: echoed back as x-client-request-id and "
        "searchable in the console. The server always mints its own x-request-id.",
        "schema": {"type": "string"},
    },
    {
        "name": "X-Switchyard-Max-Cost-Usd",
        "in": "header",
        "required": False,
        "description": "The most this request may cost, in US dollars (a plain decimal, at "
        "most 1,000,000); cost-aware routing picks a deployment within it. 400 "
        "invalid_max_cost otherwise.",
        "schema": {
            "type": "string",
            "pattern": MAX_COST_PATTERN,
            "maxLength": MAX_HEADER_NUMBER_CHARS,
        },
    },
    {
        "name": "Cache-Control",
        "in": "header",
        "required": False,
        "description": "no-cache: a fresh answer (which then refreshes the cache); no-store: "
        "the request stays out of the cache entirely.",
        "schema": {"type": "string"},
    },
]

_OPERATIONS = {
    "chat.completions": ("/v1/chat/completions", "createChatCompletion", "Chat completion"),
    "completions": ("/v1/completions", "createCompletion", "Text completion"),
    "embeddings": ("/v1/embeddings", "createEmbedding", "Embeddings"),
}


class _Schema(GenerateJsonSchema):
    """pydantic's JSON schemas as the document publishes them: no generated titles on
    fields, and the keys of an object (``logit_bias``: token ids) as ``propertyNames``, which
    says that other keys are refused (``patternProperties`` would let them through)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def dict_schema(self, schema: core_schema.DictSchema) -> dict[str, Any]:
        out = super().dict_schema(schema)
        patterns = out.pop("patternProperties", None)
        if patterns:
            [(pattern, values)] = patterns.items()
            out["propertyNames"] = {**out.get("propertyNames", {}), "pattern": pattern}
            out["additionalProperties"] = values
        return out


def request_schema(endpoint: str) -> dict[str, Any]:
    """The JSON schema of ``endpoint``'s request body, standing alone (its ``$defs`` in it)."""
    return BY_ENDPOINT[endpoint].adapter.json_schema(schema_generator=_Schema)


def _request_schemas() -> dict[str, Any]:
    """The request bodies and the models they refer to, as components of the document."""
    _, defs = TypeAdapter.json_schemas(
        [(endpoint, "validation", model.adapter) for endpoint, model in BY_ENDPOINT.items()],
        ref_template="#/components/schemas/{model}",
        schema_generator=_Schema,
    )
    return defs["$defs"]


def _completion_paths() -> dict[str, Any]:
    """The three POST operations, each with its request body and its answers."""
    paths: dict[str, Any] = {}
    for endpoint, (path, op_id, summary) in _OPERATIONS.items():
        req_name = op_id[6:] + "Request"
        resp_name = op_id[6:] + "Response"
        ok: dict[str, Any] = {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{resp_name}"}}
        }
        if endpoint != "embeddings":
            ok["text/event-stream"] = {"schema": {"type": "string"}}
        paths[path] = {
            "post": {
                "operationId": op_id,
                "summary": summary,
                "parameters": REQUEST_HEADERS,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{req_name}"}}
                    },
                },
                "responses": {"200": {"description": "OK", "content": ok}, **_ERROR_RESPONSES},
            }
        }
    return paths


def _model_paths() -> dict[str, Any]:
    """``GET /v1/models`` and ``GET /v1/models/{model}``."""
    model_list = {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
        },
    }
    return {
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "summary": "The models the caller's tier may use",
                "responses": {
                    "200": {"description": "OK", "content": _json(model_list)},
                    "401": _ERROR_RESPONSES["401"],
                    "403": _ERROR_RESPONSES["403"],
                },
            }
        },
        "/v1/models/{model}": {
            "get": {
                "operationId": "retrieveModel",
                "summary": "One model, if the caller's tier may use it",
                "parameters": [
                    {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": _json({"$ref": "#/components/schemas/Model"}),
                    },
                    "401": _ERROR_RESPONSES["401"],
                    "403": _ERROR_RESPONSES["403"],
                    "404": _ERROR_RESPONSES["404"],
                },
            }
        },
    }


def _usage_path() -> dict[str, Any]:
    """``GET /v1/usage``."""
    day = {"type": "string", "format": "date"}
    return {
        "/v1/usage": {
            "get": {
                "operationId": "getUsage",
                "summary": "The caller's own usage per day and model, with the unit prices charged",
                "parameters": [
                    {"name": "start", "in": "query", "required": True, "schema": day},
                    {"name": "end", "in": "query", "required": True, "schema": day},
                ],
                "responses": {
                    "200": {"description": "OK", "content": _json(USAGE)},
                    "400": _ERROR_RESPONSES["400"],
                    "401": _ERROR_RESPONSES["401"],
                    "403": _ERROR_RESPONSES["403"],
                },
            }
        }
    }


_DESCRIPTION = (
    "OpenAI-compatible endpoints. Authenticate with 'Authorization: Bearer sy-…'. Errors use "
    "OpenAI's error shape. Rules across fields: the prompt plus max_tokens must fit the "
    "model's context (context_length_exceeded); stream_options needs stream=true; "
    "top_logprobs needs logprobs=true; tool_choice 'required' or a named function needs tools "
    "(the name one of them). Tools (and tool messages) need a deployment with the tools "
    "capability, image parts one with vision (unsupported_capability)."
)


@cache
def openapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": ERROR, "Model": _MODEL, **_request_schemas()}
    for endpoint, (_, op_id, _) in _OPERATIONS.items():
        schemas[op_id[6:] + "Response"] = RESPONSES[endpoint]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Switchyard tenant API", "version": "1", "description": _DESCRIPTION},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {**_completion_paths(), **_model_paths(), **_usage_path()},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
