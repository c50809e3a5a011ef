"""The header-only GGUF metadata reader agrees with the gguf package's reader, key by key."""

from __future__ import annotations

import dataclasses

import pytest
from gguf import GGUFReader

from serving.engine.gguf_loader import load_gguf
from serving.engine.gguf_meta import GGUFFormatError, read_metadata
from serving.engine.registry import resolve
from serving.gateway.tokens import read_tokenizer_data

MODEL = "smollm2-135m-instruct"


def test_every_key_as_the_gguf_package_reads_it():
    path = resolve(MODEL)[1]
    reader = GGUFReader(str(path))
    meta = read_metadata(path)
    keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    assert sorted(meta) == sorted(keys)
    for key in keys:
        assert meta[key] == reader.fields[key].contents(), key


def test_tokenizer_data_equals_the_loaders():
    path = resolve(MODEL)[1]
    ours, ref = read_tokenizer_data(str(path)), load_gguf(path).tokenizer
    for f in dataclasses.fields(ref):
        assert getattr(ours, f.name) == getattr(ref, f.name), f.name


def test_refuses_what_is_not_gguf(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"NOPE" + bytes(60))
    with pytest.raises(GGUFFormatError, match="not a GGUF file"):
        read_metadata(bad)
    old = tmp_path / "v1.gguf"
    old.write_bytes(b"GGUF" + (1).to_bytes(4, "little") + bytes(60))
    with pytest.raises(GGUFFormatError, match="version 1"):
        read_metadata(old)
