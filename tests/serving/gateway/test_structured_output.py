"""Structured output and tools through the real gateway to the real model worker, with the
official openai client: every JSON answer of the local model parses and validates against its
schema (nested objects, arrays, enums, required fields; greedy and sampled, several choices,
streamed and not), so the gateway's JSON check never fires; tool calls come back as
``tool_calls``, streamed as deltas."""

from __future__ import annotations

import asyncio
import json

import jsonschema

from serving.routing.deployments import deployment_set
from tests.serving.gateway.conftest import MODEL

ORDER = {
    "type": "object",
    "properties": {
        "customer": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 30},
                "vip": {"type": "boolean"},
            },
            "required": ["name", "vip"],
            "additionalProperties": False,
        },
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{3}$"},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": 99},
                },
                "required": ["sku", "quantity"],
                "additionalProperties": False,
            },
        },
        "status": {"enum": ["new", "paid", "shipped"]},
    },
    "required": ["customer", "items", "status"],
    "additionalProperties": False,
}
REVIEW = {
    "type": "object",
    "properties": {
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
        "sentiment": {"enum": ["positive", "neutral", "negative"]},
        "summary": {"type": "string", "maxLength": 60},
        "keywords": {"type": "array", "items": {"type": "string", "maxLength": 15}, "maxItems": 4},
    },
    "required": ["rating", "sentiment", "summary", "keywords"],
    "additionalProperties": False,
}
CITY = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "country": {"type": "string", "maxLength": 30},
        "population": {"type": "integer", "minimum": 0},
    },
    "required": ["city", "country"],
    "additionalProperties": False,
}
CASES = [
    (ORDER, "Record an order for Alice: two mugs and one teapot, paid."),
    (REVIEW, "Review: the pasta was great but the service was slow."),
    (CITY, "Tell me about the capital of France."),
]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 30},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}


def _format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}


def _ask(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_every_local_answer_validates_streamed_or_not(make_caller, worker):
    client = make_caller().aclient(timeout=600)
    deployment_set(name="instant", model=MODEL, base_url=f"{worker.url}/v1", kind="local_worker",
                   api_key=worker.token, capabilities=["tools"])  # fmt: skip

    async def whole(schema, prompt, **kw):
        r = await client.chat.completions.create(
            model=MODEL, messages=_ask(prompt), response_format=_format(schema), max_tokens=200,
            **kw,
        )  # fmt: skip
        return [(schema, c.message.content, c.finish_reason) for c in r.choices]

    async def streamed(schema, prompt, **kw):
        stream = await client.chat.completions.create(
            model=MODEL, messages=_ask(prompt), response_format=_format(schema), max_tokens=200,
            stream=True, **kw,
        )  # fmt: skip
        text, finish = "", None
        async for c in stream:
            if c.choices:
                text += c.choices[0].delta.content or ""
                finish = c.choices[0].finish_reason or finish
        return [(schema, text, finish)]

    async def run():
        jobs = []
        for schema, prompt in CASES:
            jobs.append(whole(schema, prompt, temperature=0))
            jobs.append(streamed(schema, prompt, temperature=0.9, seed=11))
        jobs.append(whole(REVIEW, CASES[1][1], temperature=1.0, n=2))
        return await asyncio.gather(*jobs)

    answers = [a for batch in asyncio.run(run()) for a in batch]
    assert len(answers) == 8
    for schema, text, finish in answers:
        assert finish == "stop", text
        jsonschema.validate(json.loads(text), schema)


def test_json_object_and_tool_calls_through_the_gateway(make_caller, worker):
    client = make_caller().client(timeout=600)
    deployment_set(name="instant", model=MODEL, base_url=f"{worker.url}/v1", kind="local_worker",
                   api_key=worker.token, capabilities=["tools"])  # fmt: skip
    r = client.chat.completions.create(
        model=MODEL, messages=_ask("Describe a cat as JSON."), max_tokens=150, temperature=0,
        response_format={"type": "json_object"},
    )  # fmt: skip
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=_ask("What is the weather in Oslo?"),
            tools=[WEATHER],
            tool_choice="required",
            max_tokens=100,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
    )
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert deltas[0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in deltas)
    jsonschema.validate(json.loads(arguments), WEATHER["function"]["parameters"])
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage.completion_tokens >= len(deltas)
