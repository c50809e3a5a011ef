"""The OpenAI request bodies Switchyard accepts, as pydantic models: one set of rules.

The gateway validates every chat, completions and embeddings body against these models
(serving/gateway/validation.py), the OpenAPI document of ``/v1`` is their JSON schema
(serving/openapi.py), and the model worker parses its requests with them
(serving/engine/protocol.py), so the published schema, the gateway and the worker cannot
disagree about a field or a limit. Every limit is a named constant here, used in a ``Field``
constraint. serving/engine/request_validation.py validates with them, and
serving/engine/request_errors.py says what is wrong in OpenAI's words, naming the parameter.

The models are ``TypedDict`` classes, validated in strict mode (a boolean is not a number,
``"3"`` not an integer, NaN and infinity are refused) into plain dicts. JSON has one number
type, so an integral float of an integer field (``3.0``) is the integer 3, converted only when
it is in range: ``1e300`` is refused as it is, never made a 997-digit integer. The engine
package imports nothing from Django or the apps, so the worker and the gateway both import it.
"""

from functools import partial
from typing import Annotated, Any, Literal, NotRequired

from pydantic import BeforeValidator, ConfigDict, Discriminator, Field, Tag, with_config
from typing_extensions import TypedDict  # pydantic needs this one on Python 3.11

# --- limits ----------------------------------------------------------------------------------

MAX_N = 8  # choices per request (n, best_of)
MAX_STOP = 4  # stop sequences
MAX_STOP_CHARS = 256
MAX_TOKENS_LIMIT = 1_000_000  # max_tokens, max_completion_tokens
MAX_MESSAGES = 2048
MAX_CONTENT_PARTS = 256  # parts of one message's content
MAX_PROMPTS = 2048  # strings, or token arrays, in one prompt or embeddings input
MAX_TOKEN_ID = 2**31 - 1
MAX_LOGIT_BIAS = 1024  # entries
LOGIT_BIAS_RANGE = (-100, 100)
MAX_METADATA = 16  # pairs, as OpenAI
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_MODEL_CHARS = 256
MAX_TOOLS = 128  # OpenAI's limit
MAX_TOOL_CALLS = 128  # calls in one assistant message
MAX_TOOL_ID_CHARS = 256
MAX_TOP_K = 100_000
MAX_TOP_LOGPROBS = 20  # chat
MAX_LOGPROBS = 5  # completions
MAX_DIMENSIONS = 4096  # embeddings
SEED_RANGE = (-(2**63), 2**63 - 1)
TOOL_NAME_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"  # a function's name, a JSON schema's name
# Token ids as logit_bias keys: decimal strings of at most 9 digits (no vocabulary is larger).
TOKEN_KEY_PATTERN = "^(0|[1-9][0-9]{0,8})$"

# Strict: no coercion between types; a float field takes an int, nothing else.
STRICT = ConfigDict(strict=True, allow_inf_nan=False)
CLOSED = ConfigDict(STRICT, extra="forbid")  # an unknown key is an error
OPEN = ConfigDict(STRICT, extra="ignore")  # unknown keys are allowed (and not validated)


# --- scalars ---------------------------------------------------------------------------------


def _integral(lo: int, hi: int, v: Any) -> Any:
    """An integral float in [lo, hi] as an int (JSON has one number type); anything else as
    it is, for the strict int check to refuse."""
    if type(v) is float and v.is_integer() and lo <= v <= hi:
        return int(v)
    return v


def _integral_items(v: Any) -> Any:
    """A list of token ids with its integral floats made ints (checked in range after)."""
    return [_integral(0, MAX_TOKEN_ID, t) for t in v] if type(v) is list else v


def integer(lo: int, hi: int) -> Any:
    """An integer parameter between ``lo`` and ``hi``; an integral float in range is taken."""
    return Annotated[int, Field(ge=lo, le=hi), BeforeValidator(partial(_integral, lo, hi))]


def number(lo: float, hi: float) -> Any:
    """A finite number between ``lo`` and ``hi`` (an int is a number, a boolean is not)."""
    return Annotated[float, Field(ge=lo, le=hi)]


def token_ids(**length: int) -> Any:
    """An array of token ids (``length``: its ``min_length``, ``max_length``). Ints are
    checked as they are, in one pass; an array with integral floats, when that fails, has
    them made ints first (a Python pass over it)."""
    ids = Annotated[list[Annotated[int, Field(ge=0, le=MAX_TOKEN_ID)]], Field(**length)]
    from_floats = Annotated[ids, BeforeValidator(_integral_items)]
    return Annotated[ids | from_floats, Field(union_mode="left_to_right")]


def _form(v: Any) -> str:
    """Which form a prompt or an embeddings input takes, told by its first item, so that
    pydantic checks that form only (trying each on a long token array costs a pass each)."""
    if isinstance(v, str):
        return "text"
    if isinstance(v, list) and v and isinstance(v[0], str):
        return "texts"
    if isinstance(v, list) and v and isinstance(v[0], list):
        return "token_arrays"
    return "tokens"


FunctionName = Annotated[str, Field(pattern=TOOL_NAME_PATTERN)]
ToolId = Annotated[str, Field(max_length=MAX_TOOL_ID_CHARS)]
TokenCount = integer(1, MAX_TOKENS_LIMIT)
Temperature = number(0, 2)
TopP = number(0, 1)
Penalty = number(-2, 2)
Choices = integer(1, MAX_N)
StopText = Annotated[str, Field(max_length=MAX_STOP_CHARS)]
Stop = StopText | Annotated[list[StopText], Field(max_length=MAX_STOP)]
Metadata = Annotated[
    dict[
        Annotated[str, Field(max_length=MAX_METADATA_KEY_CHARS)],
        Annotated[str, Field(max_length=MAX_METADATA_VALUE_CHARS)],
    ],
    Field(max_length=MAX_METADATA),
]
LogitBias = Annotated[
    dict[Annotated[str, Field(pattern=TOKEN_KEY_PATTERN)], number(*LOGIT_BIAS_RANGE)],
    Field(max_length=MAX_LOGIT_BIAS),
]
JsonObject = dict[str, Any]


# --- messages --------------------------------------------------------------------------------


@with_config(OPEN)
class TextPart(TypedDict):
    """A text part of a message's content."""

    type: Literal["text"]
    text: str


@with_config(OPEN)
class ImageUrl(TypedDict):
    url: str
    detail: NotRequired[Literal["auto", "low", "high"]]


@with_config(OPEN)
class ImagePart(TypedDict):
    """An image part of a user message's content (vision deployments only)."""

    type: Literal["image_url"]
    image_url: ImageUrl


TextContent = str | Annotated[list[TextPart], Field(max_length=MAX_CONTENT_PARTS)]
UserPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]
UserContent = str | Annotated[list[UserPart], Field(max_length=MAX_CONTENT_PARTS)]


@with_config(OPEN)
class FunctionCall(TypedDict):
    name: FunctionName
    arguments: str  # JSON text


@with_config(OPEN)
class ToolCall(TypedDict):
    """A call an assistant made, in the conversation's history."""

    id: ToolId
    type: Literal["function"]
    function: FunctionCall


@with_config(OPEN)
class SystemMessage(TypedDict):
    role: Literal["system", "developer"]
    content: TextContent


@with_config(OPEN)
class UserMessage(TypedDict):
    role: Literal["user"]
    content: UserContent


# Fields in the order their errors are reported: tool calls before content.
@with_config(OPEN)
class AssistantMessage(TypedDict):
    role: Literal["assistant"]
    tool_calls: NotRequired[Annotated[list[ToolCall], Field(max_length=MAX_TOOL_CALLS)] | None]
    content: NotRequired[TextContent | None]


@with_config(OPEN)
class ToolMessage(TypedDict):
    """A tool's result, answering the assistant's call ``tool_call_id``."""

    role: Literal["tool"]
    tool_call_id: ToolId
    content: TextContent


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


# --- tools and structured output -------------------------------------------------------------


@with_config(OPEN)
class FunctionDefinition(TypedDict):
    name: FunctionName
    description: NotRequired[str]
    parameters: NotRequired[JsonObject]  # a JSON schema
    strict: NotRequired[bool | None]


@with_config(OPEN)
class Tool(TypedDict):
    """A function the model may call."""

    type: Literal["function"]
    function: FunctionDefinition


@with_config(OPEN)
class FunctionChoice(TypedDict):
    name: FunctionName


@with_config(OPEN)
class NamedToolChoice(TypedDict):
    """Call this function (one of ``tools``)."""

    type: Literal["function"]
    function: FunctionChoice


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


@with_config(OPEN)
class TextFormat(TypedDict):
    type: Literal["text"]


@with_config(OPEN)
class JsonObjectFormat(TypedDict):
    """Answer with a JSON object."""

    type: Literal["json_object"]


@with_config(OPEN)
class JsonSchemaSpec(TypedDict):
    name: FunctionName
    description: NotRequired[str]
    schema: NotRequired[JsonObject]
    strict: NotRequired[bool | None]


@with_config(OPEN)
class JsonSchemaFormat(TypedDict):
    """Answer with JSON that keeps to ``json_schema.schema``."""

    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


@with_config(CLOSED)
class StreamOptions(TypedDict):
    include_usage: NotRequired[bool]


# --- request bodies --------------------------------------------------------------------------


_CACHE = "Switchyard's own: false keeps this request out of the caches (read and write)."


@with_config(CLOSED)
class _Sampling(TypedDict):
    """The parameters chat and text completions share. Every optional field may be null,
    which means absent."""

    model: Annotated[str, Field(max_length=MAX_MODEL_CHARS)]
    max_tokens: NotRequired[TokenCount | None]
    temperature: NotRequired[Temperature | None]
    top_p: NotRequired[TopP | None]
    top_k: NotRequired[integer(-1, MAX_TOP_K) | None]
    n: NotRequired[Choices | None]
    stop: NotRequired[Stop | None]
    seed: NotRequired[integer(*SEED_RANGE) | None]
    presence_penalty: NotRequired[Penalty | None]
    frequency_penalty: NotRequired[Penalty | None]
    stream: NotRequired[bool | None]
    stream_options: NotRequired[StreamOptions | None]
    user: NotRequired[str | None]
    metadata: NotRequired[Metadata | None]
    logit_bias: NotRequired[LogitBias | None]
    cache: NotRequired[Annotated[bool | None, Field(description=_CACHE)]]


@with_config(CLOSED)
class ChatCompletionRequest(_Sampling):
    """The body of ``POST /v1/chat/completions``."""

    messages: Annotated[list[Message], Field(min_length=1, max_length=MAX_MESSAGES)]
    max_completion_tokens: NotRequired[TokenCount | None]
    logprobs: NotRequired[bool | None]
    top_logprobs: NotRequired[integer(0, MAX_TOP_LOGPROBS) | None]
    response_format: NotRequired[ResponseFormat | None]
    store: NotRequired[bool | None]
    tools: NotRequired[Annotated[list[Tool], Field(min_length=1, max_length=MAX_TOOLS)] | None]
    tool_choice: NotRequired[ToolChoice | None]
    parallel_tool_calls: NotRequired[bool | None]


Prompt = Annotated[
    Annotated[str, Tag("text")]
    | Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPTS), Tag("texts")]
    | Annotated[token_ids(min_length=1), Tag("tokens")],
    Discriminator(_form),
]


@with_config(CLOSED)
class CompletionRequest(_Sampling):
    """The body of ``POST /v1/completions``."""

    prompt: Prompt
    logprobs: NotRequired[integer(0, MAX_LOGPROBS) | None]
    echo: NotRequired[bool | None]
    best_of: NotRequired[Choices | None]
    suffix: NotRequired[str | None]


NonEmptyText = Annotated[str, Field(min_length=1)]
EmbeddingInput = Annotated[
    Annotated[NonEmptyText, Tag("text")]
    | Annotated[list[NonEmptyText], Field(min_length=1, max_length=MAX_PROMPTS), Tag("texts")]
    | Annotated[token_ids(min_length=1, max_length=MAX_PROMPTS), Tag("tokens")]
    | Annotated[
        list[token_ids()], Field(min_length=1, max_length=MAX_PROMPTS), Tag("token_arrays")
    ],
    Discriminator(_form),
]


@with_config(CLOSED)
class EmbeddingRequest(TypedDict):
    """The body of ``POST /v1/embeddings``."""

    model: Annotated[str, Field(max_length=MAX_MODEL_CHARS)]
    input: EmbeddingInput
    encoding_format: NotRequired[Literal["float", "base64"] | None]
    dimensions: NotRequired[integer(1, MAX_DIMENSIONS) | None]
    user: NotRequired[str | None]
