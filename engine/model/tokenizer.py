"""Tokenizers of Hugging Face model folders, without transformers.

Reads ``tokenizer.json`` with the ``tokenizers`` library (its post-processor adds BOS where the
model wants it), special tokens from ``tokenizer_config.json``, and the chat template from
``chat_template.jinja`` or ``tokenizer_config.json``. Chat templates render in a sandboxed Jinja
environment, as transformers does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import tokenizers


def _token_text(value: Any) -> str | None:
    """Special tokens are stored either as text or as an AddedToken dict with ``content``."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _chat_template(model_dir: Path, config: Mapping[str, Any]) -> str | None:
    path = model_dir / "chat_template.jinja"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: take "default"
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


class Tokenizer:
    """Text ↔ token ids for one model folder.

    ``bos_token`` / ``eos_token`` are the texts from ``tokenizer_config.json`` (None if absent);
    their ids are :attr:`bos_token_id` / :attr:`eos_token_id`.
    """

    def __init__(self, backend: tokenizers.Tokenizer, bos_token: str | None,
                 eos_token: str | None, chat_template: str | None) -> None:
        self.backend = backend
        self.bos_token, self.eos_token = bos_token, eos_token
        self.chat_template = chat_template

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def bos_token_id(self) -> int | None:
        return None if self.bos_token is None else self.backend.token_to_id(self.bos_token)

    @property
    def eos_token_id(self) -> int | None:
        return None if self.eos_token is None else self.backend.token_to_id(self.eos_token)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; with ``add_special_tokens`` the model's BOS (etc.) is added."""
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; special tokens are dropped unless ``skip_special_tokens`` is False."""
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: Sequence[Mapping[str, Any]],
                            add_generation_prompt: bool = True) -> str:
        """Render chat ``messages`` (``{"role", "content"}`` dicts) to the prompt text.

        The template's own BOS is part of the text, so encode the result with
        ``add_special_tokens=False``. Raises ``ValueError`` if the folder has no chat template.
        """
        if self.chat_template is None:
            raise ValueError("this model folder has no chat template")
        from jinja2 import ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise ValueError(f"chat template error: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[ext.loopcontrols])
        env.globals["raise_exception"] = raise_exception
        return env.from_string(self.chat_template).render(
            messages=list(messages), add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "", eos_token=self.eos_token or "")


def load_tokenizer(model_dir: str | Path) -> Tokenizer:
    """Load the tokenizer of an HF folder (needs ``tokenizer.json``)."""
    model_dir = Path(model_dir)
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer.json in {str(model_dir)!r}")
    config_path = model_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    return Tokenizer(
        tokenizers.Tokenizer.from_file(str(path)),
        bos_token=_token_text(config.get("bos_token")),
        eos_token=_token_text(config.get("eos_token")),
        chat_template=_chat_template(model_dir, config),
    )
