"""The tokenizer loader reads the variants HF folders use for special tokens and chat templates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from asymcache.engine.builtin import ensure_builtin_model
from asymcache.engine.model import load_tokenizer

TEMPLATE = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}{% endfor %}"


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory) -> Path:
    return ensure_builtin_model(tmp_path_factory.mktemp("cache")) / "tokenizer.json"


def folder_with(tmp_path: Path, tokenizer_json: Path, config: dict | None) -> Path:
    shutil.copy(tokenizer_json, tmp_path / "tokenizer.json")
    if config is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return tmp_path


def test_added_token_dicts_and_named_templates_are_read(tmp_path, tokenizer_json):
    config = {"bos_token": {"content": "<|bos|>", "special": True},
              "eos_token": {"content": "<|end|>", "special": True},
              "chat_template": [{"name": "tool_use", "template": "x"},
                                {"name": "default", "template": TEMPLATE}]}
    tok = load_tokenizer(folder_with(tmp_path, tokenizer_json, config))
    assert (tok.bos_token, tok.eos_token, tok.eos_token_id) == ("<|bos|>", "<|end|>", 5)
    chat = [{"role": "user", "content": "hi"}]
    assert tok.apply_chat_template(chat) == "[user] hi<|end|>"


def test_chat_template_file_wins_over_the_config(tmp_path, tokenizer_json):
    folder = folder_with(tmp_path, tokenizer_json, {"chat_template": "ignored"})
    (folder / "chat_template.jinja").write_text(TEMPLATE)
    tok = load_tokenizer(folder)
    assert tok.apply_chat_template([{"role": "user", "content": "a"}]) == "[user] a"


def test_folder_without_config_still_encodes_but_has_no_chat(tmp_path, tokenizer_json):
    tok = load_tokenizer(folder_with(tmp_path, tokenizer_json, None))
    assert tok.bos_token_id is None and tok.eos_token_id is None
    assert tok.decode(tok.encode("plain text", add_special_tokens=False)) == "plain text"
    assert tok.decode([0, *tok.encode("x", add_special_tokens=False)], False) == "<|bos|>x"
    with pytest.raises(ValueError, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "a"}])


def test_missing_tokenizer_json_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no tokenizer\.json"):
        load_tokenizer(tmp_path)
