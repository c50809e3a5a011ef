import pytest
from gguf import GGUFReader

from serving.engine.registry import resolve
from tests.engine.conftest import MODEL


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
