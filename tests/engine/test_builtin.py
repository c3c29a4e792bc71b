"""The built-in model folder: pinned bytes, deterministic across processes, a real HF folder."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from asymcache.engine.builtin import (
    BuiltinSpec,
    default_cache_root,
    ensure_builtin_model,
    resolve_model_dir,
)
from asymcache.engine.builtin.create import FILES
from asymcache.engine.builtin.vocab import corpus_paragraphs
from asymcache.engine.model import allocate_kv_pool, load_model, load_tokenizer
from asymcache.kernels.metadata import AttentionMetadata

# BLAKE2b-128 over (name, length, bytes) of every file, sorted by name. Changing the spec, the
# corpus, the weight recipe or the tokenizer training changes it: then bump BuiltinSpec.version.
FILES_DIGEST = "38a980b4bd4dfe7fea06e9365966f66f"
FINGERPRINT = "baaf86785311ec3b330daf46a929df63"
REPO = Path(__file__).parents[2]


def files_digest(folder: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(FILES):
        data = (folder / name).read_bytes()
        h.update(f"{name}:{len(data)}:".encode())
        h.update(data)
    return h.hexdigest()


@pytest.fixture(scope="module")
def builtin(tmp_path_factory) -> Path:
    return ensure_builtin_model(tmp_path_factory.mktemp("cache"))


def test_files_are_pinned_and_fingerprint_too(builtin):
    assert builtin.name == f"builtin-{BuiltinSpec().version}"
    assert sorted(p.name for p in builtin.iterdir()) == sorted(FILES)
    assert files_digest(builtin) == FILES_DIGEST
    assert load_model(builtin)[1].fingerprint == FINGERPRINT


def test_two_processes_racing_create_identical_files_in_one_folder(tmp_path):
    code = ("import sys; from asymcache.engine.builtin import ensure_builtin_model; "
            "print(ensure_builtin_model(sys.argv[1]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True,
                              env={"PYTHONHASHSEED": seed, "PATH": ""})
             for seed in ("1", "2")]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] == str(tmp_path / f"builtin-{BuiltinSpec().version}")
    assert [p.name for p in tmp_path.iterdir()] == [Path(outs[0]).name]  # no temp leftovers
    assert files_digest(Path(outs[0])) == FILES_DIGEST


def test_transformers_loads_the_folder_and_agrees_with_the_engine(builtin):
    hf = LlamaForCausalLM.from_pretrained(builtin, dtype=torch.float32).eval()
    ids = torch.tensor(load_tokenizer(builtin).encode("The harbor wall was built of grey stone."))
    with torch.no_grad():
        ref = hf(ids[None]).logits[0]
    model, info = load_model(builtin)
    meta = AttentionMetadata.for_sequences([list(range(len(ids)))], [len(ids)], [[1]], 16)
    ours = model(ids, meta, allocate_kv_pool(info, 2))
    assert float((ours - ref).abs().max()) <= 2e-5 * float(ref.abs().max())


def test_tokenizer_round_trips_the_corpus_and_adds_bos(builtin):
    tok = load_tokenizer(builtin)
    assert tok.vocab_size == 2048 and (tok.bos_token_id, tok.eos_token_id) == (0, 1)
    for paragraph in list(corpus_paragraphs())[::7]:
        ids = tok.encode(paragraph)
        assert ids[0] == tok.bos_token_id and tok.decode(ids) == paragraph
    text = "Numbers 12,700 and tabs\tand émigré café ☕ survive."
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_our_tokenizer_and_chat_template_agree_with_transformers(builtin):
    ours, theirs = load_tokenizer(builtin), AutoTokenizer.from_pretrained(builtin)
    text = "Q: How do I reset my password?\nA: Click \"Forgot password\"."
    assert ours.encode(text) == theirs(text)["input_ids"]
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    rendered = ours.apply_chat_template(chat)
    assert rendered == theirs.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|bos|><|system|>\nBe brief.<|end|>\n<|user|>\nHi!<|end|>\n<|assistant|>\n"
    with pytest.raises(ValueError, match="roles must be"):
        ours.apply_chat_template([{"role": "tool", "content": "x"}])


def test_resolve_model_dir_and_cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ASYMCACHE_CACHE_DIR", str(tmp_path / "root"))
    assert default_cache_root() == tmp_path / "root"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_dir(tmp_path / "nowhere")
    assert resolve_model_dir(tmp_path) == tmp_path


def test_incomplete_folder_is_reported_not_used(tmp_path):
    folder = ensure_builtin_model(tmp_path)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(RuntimeError, match=r"lacks tokenizer\.json; delete it"):
        ensure_builtin_model(tmp_path)
