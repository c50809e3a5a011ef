import pytest
from gguf import GGUFReader

from serving.engine.registry import resolve
from tests.serving.engine.conftest import MODEL, chat_request


@pytest.mark.parametrize(
    "text",
    ["Hello, world!", "  leading spaces and\ttabs\n\nnewlines", "numbers 12345 and 3.14",
     "unicode: café, naïve, 日本語, emoji 🚀", "<|im_start|>user\nhi<|im_end|>"],
)  # fmt: skip
def test_round_trip(loaded, text):
    tok = loaded[1]
    assert tok.decode(tok.encode(text), skip_special_tokens=False) == text


def test_special_tokens_are_single_ids(loaded):
    tok = loaded[1]
    assert tok.encode("<|im_start|>") == [1] and tok.encode("<|im_end|>") == [2]
    assert 2 in tok.eos_token_ids


def test_digits_are_split_individually(loaded):
    tok = loaded[1]
    assert len(tok.encode("12345")) == 5


def test_chat_template_is_the_files(loaded):
    tok = loaded[1]
    reader = GGUFReader(str(resolve(MODEL)[1]))
    assert tok.chat_template == reader.fields["tokenizer.chat_template"].contents()
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_unsupported_architecture_is_named(tmp_path):
    import gguf

    from serving.engine.errors import UnsupportedModelError
    from serving.engine.gguf_loader import load_gguf

    path = tmp_path / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "mamba")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedModelError, match="mamba"):
        load_gguf(path)


# ---- against transformers' reading of the same GGUF --------------------------------------

HARD_STRINGS = [
    "a  b   c    d     e",  # runs of spaces
    "    indented by four\n\tand a tab\n\n\n   trailing   ",
    " leading space",
    "\u00a0non-breaking\u2009thin\u3000ideographic spaces",
    "café naïve résumé e\u0301 Ελληνικά русский العربية हिन्दी 日本語 한국어",
    "emoji 🚀🔥 family 👩\u200d👩\u200d👧 flag 🇫🇷 skin 👍🏽",
    "12345678901234567890 3.14159 1,000,000 -42 1e-9 0x1F a1b22c333 ２０２４ ٣ ½ x²",
    "def f(*args, **kw):\n    return {'a': [1, 2], \"b\": x+=1}  # comment\n",
    '<div class="x">&nbsp;</div>\nSELECT * FROM t WHERE a >= 10 -- why?;',
    "don't I'll we've THEY'RE o'clock",
    "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>",
    "\r\n\r\n\x00\x7f",
]


@pytest.fixture(scope="module")
def hf_tokenizer():
    """transformers' tokenizer for the GGUF (what ``AutoTokenizer.from_pretrained(...,
    gguf_file=...)`` builds, without also reading every tensor's header), with one fix:
    transformers ignores the file's ``tokenizer.ggml.pre = smollm``, the pre-tokenizer of
    SmolLM2's own tokenizer.json (and llama.cpp's): every Unicode digit split off on its own
    before the GPT-2 pattern. Without it the two part where a non-ASCII numeral follows a space
    (" ½": ours "Ġ" + "Â½", transformers' conversion "ĠÂ" + "½"); ASCII digits never merge with
    a space in this vocabulary."""
    pytest.importorskip("transformers")
    from tokenizers import pre_tokenizers

    path = resolve(MODEL)[1]
    try:
        from transformers.integrations.gguf import convert_gguf_tokenizer, get_gguf_tokenizer
    except ImportError:  # older transformers: the public way, slower
        from transformers import AutoTokenizer

        kw = {"gguf_file": path.name, "local_files_only": True}
        backend = AutoTokenizer.from_pretrained(path.parent, **kw).backend_tokenizer
    else:
        arch, data, _config = get_gguf_tokenizer(str(path))
        backend = convert_gguf_tokenizer(arch, data)[0]
        assert data["pre_tokenizer_type"] == "smollm"
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    return backend


@pytest.mark.parametrize("text", HARD_STRINGS)
def test_encoding_is_transformers(loaded, hf_tokenizer, text):
    tok = loaded[1]
    ids = tok.encode(text)
    assert ids == hf_tokenizer.encode(text, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == hf_tokenizer.decode(
        ids, skip_special_tokens=False
    )


def test_endoftext_ends_generation(make_engine, loaded):
    """A model that emits <|endoftext|> (SmolLM2's end of a document; the file names
    <|im_end|> as its EOS) is done: the text stops before it, finish_reason is "stop"; with
    ignore_eos it goes on. The model is made to choose the token at its third step."""
    tok = loaded[1]
    (endoftext,) = tok.encode("<|endoftext|>")
    assert endoftext in tok.eos_token_ids

    def run(**params) -> list:
        engine = make_engine()
        real = engine.runner.run
        steps = 0

        def run_step(batch):
            nonlocal steps
            logits = real(batch).clone()  # inference tensors are read-only outside
            steps += 1
            if steps == 3:
                logits[:, endoftext] = logits.max() + 10
            return logits

        engine.runner.run = run_step
        engine.add_request(chat_request(tok, "e", "Tell me a story.", max_tokens=8, **params))
        deltas = []
        while engine.has_work():
            deltas += engine.step()
        return deltas

    deltas = run()
    assert [d.finish_reason for d in deltas] == [None, None, "stop"]
    assert deltas[-1].token_ids == [endoftext] and deltas[-1].text == ""
    assert "<|endoftext|>" not in "".join(d.text for d in deltas)
    assert run(ignore_eos=True)[-1].finish_reason == "length"
