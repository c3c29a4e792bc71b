"""RemoteTierConfig: validation names the bad field; auth and TLS reach redis-py unchanged."""

from __future__ import annotations

import pytest

from asymcache.tiers.remote_config import RemoteTierConfig, parse_nodes


def test_nodes_accept_text_sequences_and_ipv6() -> None:
    assert parse_nodes("a:7000, b:7001") == (("a", 7000), ("b", 7001))
    assert parse_nodes(["[::1]:6379"]) == (("::1", 6379),)
    assert RemoteTierConfig("h:1,h:2", 1).nodes == ("h:1", "h:2")


@pytest.mark.parametrize("nodes", ["", "host", "host:0", "host:70000", ":6379", "h:1,x"])
def test_bad_nodes_are_named(nodes: str) -> None:
    with pytest.raises(ValueError, match=r"RemoteTierConfig\.nodes"):
        RemoteTierConfig(nodes, 1)


@pytest.mark.parametrize(("field", "value"), [
    ("capacity_bytes", 0), ("queue_bytes", -1), ("batch_ops", 0), ("probe_bytes", -1),
    ("socket_timeout_s", 0), ("connect_timeout_s", float("inf")), ("ttl_s", -1),
    ("load_bandwidth_bps", float("nan")), ("retry_min_s", True),
])
def test_bad_numbers_are_named(field: str, value: object) -> None:
    options = {"capacity_bytes": 1, field: value}
    with pytest.raises(ValueError, match=rf"RemoteTierConfig\.{field} must be"):
        RemoteTierConfig("h:1", **options)


def test_prefix_may_not_hold_a_hash_tag() -> None:
    with pytest.raises(ValueError, match=r"RemoteTierConfig\.prefix"):
        RemoteTierConfig("h:1", 1, prefix="kv{a}:")


def test_retry_bounds_and_tls_files_are_checked() -> None:
    with pytest.raises(ValueError, match="retry_max_s"):
        RemoteTierConfig("h:1", 1, retry_min_s=2.0, retry_max_s=1.0)
    with pytest.raises(ValueError, match="tls=True"):
        RemoteTierConfig("h:1", 1, tls_ca_file="/ca.pem")


def test_client_kwargs_pass_auth_and_tls_through() -> None:
    cfg = RemoteTierConfig("h:1", 1, username="kv", password="pw", tls=True,
                           tls_ca_file="/ca.pem", tls_cert_file="/c.pem", tls_key_file="/k.pem",
                           socket_timeout_s=0.25, connect_timeout_s=0.5)
    assert cfg.client_kwargs() == {
        "socket_timeout": 0.25, "socket_connect_timeout": 0.5, "socket_keepalive": True,
        "username": "kv", "password": "pw", "ssl": True, "ssl_cert_reqs": "required",
        "ssl_check_hostname": True, "ssl_ca_certs": "/ca.pem", "ssl_certfile": "/c.pem",
        "ssl_keyfile": "/k.pem"}
    assert "pw" not in repr(cfg)
    unverified = RemoteTierConfig("h:1", 1, tls=True, tls_verify=False).client_kwargs()
    assert unverified["ssl_cert_reqs"] == "none" and not unverified["ssl_check_hostname"]


def test_ttl_and_load_figures_derive_from_the_fields() -> None:
    assert RemoteTierConfig("h:1", 1, ttl_s=1.5).ttl_ms == 1500
    assert RemoteTierConfig("h:1", 1).ttl_ms == 0
    assert RemoteTierConfig("h:1", 1).measured
    assert not RemoteTierConfig("h:1", 1, load_bandwidth_bps=1e9).measured
