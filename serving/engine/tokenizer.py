"""Byte-level BPE tokenizer and chat template, built from the GGUF file's own data.

Tools are offered in the system prompt in the worker's own format (serving/engine/tools.py),
whatever the template: SmolLM2's knows nothing of tools."""

from __future__ import annotations

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from serving.engine import tools as tool_format
from serving.engine.gguf_loader import TokenizerData

CONTROL = 3  # gguf token type of special/control tokens
USER_DEFINED = 4


class ChatTokenizer:
    """Encode/decode text and render the model's chat template."""

    def __init__(self, data: TokenizerData) -> None:
        vocab = {tok: i for i, tok in enumerate(data.tokens)}
        merges = [tuple(m.split(" ", 1)) for m in data.merges]
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
        splits = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
        if data.pre in ("smollm", "starcoder", "refact"):
            # SmolLM splits every digit on its own before the GPT-2 pattern.
            splits.insert(0, pre_tokenizers.Digits(individual_digits=True))
        tok.pre_tokenizer = pre_tokenizers.Sequence(splits)
        tok.decoder = decoders.ByteLevel()
        specials = [
            AddedToken(t, special=True, normalized=False)
            for t, kind in zip(data.tokens, data.token_types, strict=False)
            if kind in (CONTROL, USER_DEFINED)
        ]
        tok.add_special_tokens(specials)
        self._tok = tok
        self.vocab_size = len(data.tokens)
        self.bos_token_id = data.bos_id
        self.bos_token = data.tokens[data.bos_id] if data.bos_id is not None else ""
        self.eos_token = data.tokens[data.eos_id] if data.eos_id is not None else ""
        self.add_bos = data.add_bos
        self.eos_token_ids: set[int] = set()
        if data.eos_id is not None:
            self.eos_token_ids.add(data.eos_id)
        # End-of-turn and end-of-text markers end generation whatever the file names as EOS
        # (SmolLM2 names <|im_end|>; a completion may end with <|endoftext|> instead).
        for name in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
            if name in vocab:
                self.eos_token_ids.add(vocab[name])
        self._tokens = data.tokens
        self.chat_template = data.chat_template
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        self._template = env.from_string(data.chat_template) if data.chat_template else None

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if add_special_tokens and self.add_bos and self.bos_token_id is not None:
            ids = [self.bos_token_id, *ids]
        return ids

    def decode(self, ids: list[int], *, skip_special_tokens: bool = True) -> str:
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def id_to_token(self, i: int) -> str:
        return self._tokens[i]

    def token_text(self, i: int) -> str:
        """The text of one token (bytes decoded leniently), for logprobs."""
        return self._tok.decode([i], skip_special_tokens=False)

    def to_json(self) -> str:
        """The tokenizer as ``tokenizers`` JSON (what the grammar library reads)."""
        return self._tok.to_str()

    def apply_chat_template(
        self,
        messages: list[dict],
        add_generation_prompt: bool = True,
        tools: list[dict] | None = None,
    ) -> str:
        """The prompt for ``messages`` (role and text each); ``tools`` (OpenAI definitions)
        are offered in the system prompt (serving/engine/tools.py)."""
        if tools:
            messages = tool_format.with_tools(messages, tools)
        if self._template is None:
            # No template in the file: plain role-prefixed turns.
            text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
            return text + ("assistant: " if add_generation_prompt else "")
        return self._template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)
