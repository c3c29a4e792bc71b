"""Block identity: golden digests pin the hashing, so any change to it is deliberate."""

from __future__ import annotations

import subprocess
import sys

import pytest

from asymcache.cacheserver.blocks import ROOT_PARENT, KVLayout, block_key, block_keys, namespace_id

LAYOUT = KVLayout(num_layers=32, num_kv_heads=8, head_dim=128, block_size=16, dtype="bfloat16")
NS_GOLDEN = "d63670520861e6849a89bd76d3ce5fb3"
NS_SALTED_GOLDEN = "1c93594085fbbac193884d8584f173bd"
KEYS_GOLDEN = ["b464f165e91d48fe367847b462e944ca", "3d598ff03ce0c483019068a8d844fb43"]


def test_namespace_digest_is_pinned():
    assert namespace_id("llama-3-8b-fp", LAYOUT, "").hex() == NS_GOLDEN
    assert namespace_id("llama-3-8b-fp", LAYOUT, "tenant-a").hex() == NS_SALTED_GOLDEN


def test_block_keys_are_pinned_and_cover_full_blocks_only():
    keys = block_keys(bytes.fromhex(NS_GOLDEN), list(range(40)), 16)
    assert [k.hex() for k in keys] == KEYS_GOLDEN  # 40 tokens = 2 full blocks + 8 left over


def test_keys_are_the_same_in_another_process():
    code = (
        "from asymcache.cacheserver.blocks import block_keys;"
        f"print(block_keys(bytes.fromhex('{NS_GOLDEN}'), list(range(40)), 16)[1].hex())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == KEYS_GOLDEN[1]


def test_key_chains_on_the_whole_prefix():
    ns = bytes.fromhex(NS_GOLDEN)
    a = block_keys(ns, [1] * 16 + [2] * 16, 16)
    b = block_keys(ns, [3] * 16 + [2] * 16, 16)
    assert a[1] != b[1]  # same tokens in block 1, different prefix
    assert a[0] == block_key(ns, ROOT_PARENT, [1] * 16)
    assert a[1] == block_key(ns, a[0], [2] * 16)


@pytest.mark.parametrize(
    "change",
    [
        {"num_layers": 31},
        {"num_kv_heads": 4},
        {"head_dim": 64},
        {"block_size": 32},
        {"dtype": "float16"},
        {"tp_rank": 1, "tp_size": 2},
    ],
)
def test_every_layout_field_changes_the_namespace(change):
    fields = LAYOUT.to_dict() | change
    assert namespace_id("fp", KVLayout(**fields)) != namespace_id("fp", LAYOUT)


def test_salt_and_fingerprint_separate_namespaces():
    assert namespace_id("fp", LAYOUT, "a") != namespace_id("fp", LAYOUT, "b")
    assert namespace_id("fp1", LAYOUT) != namespace_id("fp2", LAYOUT)
    # length-prefixed parts: moving characters between fingerprint and salt changes the digest
    assert namespace_id("ab", LAYOUT, "c") != namespace_id("a", LAYOUT, "bc")


@pytest.mark.parametrize(
    "bad",
    [{"num_layers": 0}, {"dtype": "int8"}, {"tp_rank": 2, "tp_size": 2}, {"head_dim": True}],
)
def test_bad_layout_names_the_field(bad):
    field = next(iter(bad))
    with pytest.raises(ValueError, match=field if field != "tp_rank" else "tp_rank"):
        KVLayout(**(LAYOUT.to_dict() | bad))


def test_layout_sizes():
    assert LAYOUT.bytes_per_token == 131_072  # Llama-3-8B, REFERENCE_NUMBERS.md
    assert LAYOUT.bytes_per_block == 16 * 131_072
    assert KVLayout.from_dict(LAYOUT.to_dict()) == LAYOUT


def test_salts_and_fingerprints_over_their_limits_are_refused_naming_them():
    namespace_id("f" * 256, LAYOUT, "s" * 256)  # at the limits
    with pytest.raises(ValueError, match=r"^cache_salt is 257 bytes in UTF-8, more than 256"):
        namespace_id("fp", LAYOUT, "s" * 257)
    with pytest.raises(ValueError, match=r"^cache_salt is 258 bytes"):
        namespace_id("fp", LAYOUT, "\u00e9" * 129)
    with pytest.raises(ValueError, match=r"^model_fingerprint is longer than 256 bytes"):
        namespace_id("f" * 257, LAYOUT)
