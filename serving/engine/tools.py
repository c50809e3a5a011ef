"""Tool calling on the model worker: how tools reach the model and how its calls come back.

SmolLM2's chat template knows nothing of tools, so the worker uses one documented format for
every model it serves (docs/engine.md, "Tools"):

* The tools are described in the system prompt (:func:`system_prompt`): their JSON
  definitions between ``<tools>`` and ``</tools>``, and how to call them.
* A call is the whole answer: ``<tool_call>[{"name": …, "arguments": {…}}, …]</tool_call>``.
  A grammar (serving/engine/grammar.py) holds the model to it: the name is one of the tools,
  the arguments validate against its ``parameters``; with ``tool_choice: "auto"`` the model
  may answer in text instead (text that does not start with ``<``).
* Earlier turns go back to the model in the same form: an assistant message's
  ``tool_calls`` as that text, a ``tool`` message as a turn of the ``tool`` role.

:func:`parse_calls` turns a finished answer into OpenAI ``tool_calls``; :class:`CallStream`
does it as the answer streams, emitting each call's name as soon as it is known and its
arguments as they are generated, like OpenAI's deltas.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

# The text around a tool-call answer.
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

PROMPT = """You can call functions. They are described as JSON between <tools> and </tools>:
<tools>
{tools}
</tools>
To call functions, answer only with their names and JSON arguments, like this:
<tool_call>[{{"name": "<function name>", "arguments": {{<arguments as JSON>}}}}]</tool_call>
The results come back in turns of the tool role."""


def system_prompt(tools: list[dict[str, Any]]) -> str:
    """The part of the system prompt that offers ``tools`` (OpenAI tool definitions)."""
    lines = "\n".join(json.dumps(t, ensure_ascii=False, separators=(",", ":")) for t in tools)
    return PROMPT.format(tools=lines)


def render_calls(tool_calls: list[dict[str, Any]]) -> str:
    """An assistant message's ``tool_calls`` as the model would have written them."""
    calls = []
    for c in tool_calls:
        fn = c.get("function") or {}
        try:
            arguments = json.loads(fn.get("arguments") or "{}")
        except ValueError:
            arguments = fn.get("arguments")  # sent as it came: the model sees what it was
        calls.append({"name": fn.get("name"), "arguments": arguments})
    body = json.dumps(calls, ensure_ascii=False, separators=(",", ":"))
    return f"{TOOL_CALL_OPEN}{body}{TOOL_CALL_CLOSE}"


def with_tools(messages: list[dict[str, str]], tools: list[dict[str, Any]]) -> list[dict]:
    """``messages`` (role and text) with the tools offered in the system prompt: appended to
    the first system message, or in a new one before the others."""
    offer = system_prompt(tools)
    if messages and messages[0]["role"] == "system":
        first = {**messages[0], "content": f"{messages[0]['content']}\n\n{offer}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": offer}, *messages]


def call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_calls(text: str) -> list[dict[str, Any]] | None:
    """The OpenAI ``tool_calls`` of a finished answer, or None when it is not a (complete)
    tool call."""
    if not (text.startswith(TOOL_CALL_OPEN) and text.endswith(TOOL_CALL_CLOSE)):
        return None
    try:
        calls = json.loads(text[len(TOOL_CALL_OPEN) : -len(TOOL_CALL_CLOSE)])
    except ValueError:
        return None
    if not isinstance(calls, list) or not calls:
        return None
    out = []
    for c in calls:
        if not (isinstance(c, dict) and isinstance(c.get("name"), str)):
            return None
        args = json.dumps(c.get("arguments", {}), ensure_ascii=False, separators=(",", ":"))
        fn = {"name": c["name"], "arguments": args}
        out.append({"id": call_id(), "type": "function", "function": fn})
    return out


@dataclass
class _Call:
    name: str | None = None
    args_start: int | None = None  # where the arguments value starts in the buffer
    args_end: int | None = None
    sent_head: bool = False
    sent_args: int = 0  # characters of the arguments already sent


@dataclass
class CallStream:
    """One streamed choice of a request with tools: feed it the generated text, get chat
    deltas back (``{"content": …}`` or ``{"tool_calls": […]}``).

    An answer that starts with ``<`` is a tool call (the grammar lets a text answer start with
    anything else): it is held back and scanned as JSON as it grows; each call's id and name
    go out once the name is complete, its arguments as they arrive. Any other answer is
    content, passed on as it comes. A call cut short (``max_tokens``) is handed back, at the
    end, as the text it was (see :meth:`finish`)."""

    mode: str = ""  # "", "text" or "call"
    buf: str = ""
    pos: int = 0  # scanned up to here (a position in buf)
    depth: int = 0  # JSON nesting at pos, the call list itself at 1
    in_string: bool = False
    escaped: bool = False
    key_start: int | None = None
    key: str | None = None
    expect_key: bool = False
    value_start: int | None = None
    calls: list[_Call] = field(default_factory=list)

    def feed(self, text: str) -> list[dict[str, Any]]:
        if not text:
            return []
        if self.mode == "text":
            return [{"content": text}]
        if self.mode == "":
            self.mode = "call" if text.startswith("<") else "text"
            if self.mode == "text":
                return [{"content": text}]
        self.buf += text
        self._scan()
        return self._deltas()

    @property
    def is_call(self) -> bool:
        return self.mode == "call"

    def finish(self) -> tuple[list[dict[str, Any]], bool]:
        """The last deltas, and whether the answer was a complete tool call. A call cut
        short is sent as content: the client sees what was generated."""
        if self.mode != "call":
            return [], False
        if parse_calls(self.buf) is not None and all(c.sent_head for c in self.calls):
            return self._deltas(), True
        return ([{"content": self.buf}] if not any(c.sent_head for c in self.calls) else []), False

    # ---- the scanner: the call list's JSON, one character at a time ----------------------

    def _scan(self) -> None:
        start = len(TOOL_CALL_OPEN)
        if len(self.buf) < start:
            return
        self.pos = max(self.pos, start)
        while self.pos < len(self.buf):
            ch = self.buf[self.pos]
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif ch == "\\":
                    self.escaped = True
                elif ch == '"':
                    self.in_string = False
                    if self.key_start is not None:
                        self.key = json.loads(self.buf[self.key_start : self.pos + 1])
                        self.key_start = None
                    elif self.depth == 2 and self.value_start is not None:
                        self._end_value(self.pos + 1)
            elif ch == '"':
                self.in_string = True
                if self.depth == 2 and self.expect_key:
                    self.key_start, self.expect_key = self.pos, False
                elif self.depth == 2 and self.value_start is None:
                    self.value_start = self.pos
            elif ch in "[{":
                if self.depth == 1 and ch == "{":
                    self.calls.append(_Call())
                    self.expect_key = True
                elif self.depth == 2 and self.value_start is None:
                    self.value_start = self.pos
                self.depth += 1
            elif ch in "]}":
                self.depth -= 1
                if self.depth == 2 and self.value_start is not None:
                    self._end_value(self.pos + 1)
                elif self.depth == 1 and self.value_start is not None:
                    self._end_value(self.pos)  # a scalar value ends at the closing brace
            elif ch == ":" and self.depth == 2:
                self.value_start = None
            elif ch == "," and self.depth == 2:
                if self.value_start is not None:
                    self._end_value(self.pos)
                self.expect_key = True
            elif self.depth == 2 and not ch.isspace() and self.value_start is None and self.key:
                self.value_start = self.pos  # a number, true, false or null
            self.pos += 1
        call = self.calls[-1] if self.calls else None
        if call and self.key == "arguments" and self.value_start is not None:
            call.args_start = self.value_start

    def _end_value(self, end: int) -> None:
        call = self.calls[-1]
        raw = self.buf[self.value_start : end].strip()
        if self.key == "name":
            try:
                name = json.loads(raw)
            except ValueError:
                name = None
            call.name = name if isinstance(name, str) else None
        elif self.key == "arguments":
            call.args_start, call.args_end = self.value_start, end
        self.value_start, self.key = None, None

    def _deltas(self) -> list[dict[str, Any]]:
        out = []
        for i, call in enumerate(self.calls):
            if call.name is None:
                continue
            if not call.sent_head:
                call.sent_head = True
                out.append(
                    {
                        "index": i,
                        "id": call_id(),
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                )
            if call.args_start is None:
                continue
            end = call.args_end if call.args_end is not None else len(self.buf)
            args = self.buf[call.args_start : end]
            if len(args) > call.sent_args:
                out.append({"index": i, "function": {"arguments": args[call.sent_args :]}})
                call.sent_args = len(args)
        return [{"tool_calls": [d]} for d in out]
