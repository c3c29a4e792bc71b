"""Who may reach the daemon's sockets (docs/security.md).

* **Protected TCP** (:func:`exposed_endpoints`, checked by ``ServerConfig``): an ``ipc://`` path
  or a ``tcp://`` endpoint on a loopback address (``127.0.0.0/8``, ``::1``, ``localhost``) is
  reachable from this host only; any other ``tcp://`` endpoint (``0.0.0.0``, ``*``, an interface,
  a host name) needs CURVE with an allow-list of client keys, or ``insecure_tcp``.
* **CURVE** (:class:`ServerCurve`): the daemon's key pair, read once at start, and
  :class:`ClientKeys`, the public keys of the allowed clients (``*.key`` certificates in
  ``curve_clients_dir``). The ZAP authenticator asks :meth:`ClientKeys.callback` at each
  handshake, and the router asks :meth:`ClientKeys.allows` for each message, so a key removed
  from the folder stops working on connections made before its removal too.
* **Rotation**: :meth:`ClientKeys.reload` reads the folder again when its listing changed
  (each housekeeping round, about once a second) or at once on SIGHUP; the new set replaces the
  old one in one assignment, so the authenticator's thread never sees half of it.

Start-up problems (a missing secret key, an empty allow-list) raise :class:`AccessError`, a
configuration error that names the field (``asymcache serve`` exits 2).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import zmq

log = logging.getLogger("asymcache.access")
ENDPOINT_FIELDS = ("endpoint", "events_endpoint", "events_replay_endpoint")
_Z85_KEY_CHARS = 40  # a z85-encoded 32-byte CURVE key


class AccessError(ValueError):
    """A CURVE setting that cannot be used (names the field): a configuration error."""


def is_local(endpoint: str) -> bool:
    """Whether only this host can reach ``endpoint``: ``ipc://``, or ``tcp://`` on a loopback
    address. Anything else (``0.0.0.0``, ``*``, an interface or host name) counts as exposed."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://"):].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host or interface name: it may be reachable from anywhere
        return False


def exposed_endpoints(endpoints: dict[str, str]) -> list[tuple[str, str]]:
    """``(field, endpoint)`` of each set endpoint that other hosts may reach."""
    return [(name, value) for name, value in endpoints.items() if value and not is_local(value)]


def unprotected_message(name: str, endpoint: str) -> str:
    """Why ``endpoint`` (the field ``name``) is refused, and the two ways out."""
    return (f"{name}: {endpoint} can be reached from other hosts and nothing checks who connects "
            f"(any client could read and write every tenant's KV blocks). Either configure CURVE "
            f"with allowed clients (curve_secret_key_file and curve_clients_dir, a folder of the "
            f"clients' public certificates; `asymcache keys` makes them), or serve without "
            f"authentication with insecure_tcp (`asymcache serve --insecure-tcp`, "
            f"ASYMCACHE_DAEMON_INSECURE_TCP=true); see docs/security.md")


def _listing(directory: Path) -> tuple[tuple[str, int, int], ...] | None:
    """``(name, mtime_ns, size)`` of each ``*.key`` file, or ``None`` when the folder is gone."""
    try:
        with os.scandir(directory) as entries:
            return tuple(sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size)
                                for e in entries if e.name.endswith(".key") and e.is_file()))
    except OSError:
        return None


def read_client_keys(directory: Path) -> tuple[frozenset[bytes], list[str]]:
    """The z85 public keys of the ``*.key`` certificates in ``directory`` (zmq.auth format),
    and one line per file that holds none (skipped)."""
    import zmq.auth

    keys, problems = set(), []
    for path in sorted(directory.glob("*.key")):
        try:
            public, _ = zmq.auth.load_certificate(path)
        except (OSError, ValueError) as e:
            problems.append(f"{path}: {e}")
            continue
        if len(public) != _Z85_KEY_CHARS:
            problems.append(f"{path}: public-key is not a 40-character z85 key")
            continue
        keys.add(public)
    return frozenset(keys), problems


class ClientKeys:
    """The allow-list: public keys of the clients in ``directory``, reloaded when it changes.

    Read by two threads: the ZAP authenticator's (:meth:`callback`) and the event loop's
    (:meth:`allows`, :meth:`reload`); :attr:`keys` is replaced, never mutated."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.keys: frozenset[bytes] = frozenset()
        self._listing: tuple | None = None

    def load(self) -> None:
        """The first read, at start: an :class:`AccessError` naming ``curve_clients_dir`` when
        the folder is missing or allows nobody (CURVE would then authenticate no one)."""
        if not self.directory.is_dir():
            raise AccessError(f"curve_clients_dir: {self.directory} is not a directory")
        self.reload(force=True)
        if not self.keys:
            raise AccessError(
                f"curve_clients_dir: {self.directory} holds no client certificate (*.key), so "
                f"no client could connect; add the public certificate of each allowed client "
                f"(`asymcache keys client NAME DIR --allow {self.directory}`)")

    def reload(self, force: bool = False) -> bool:
        """Read the folder again if its listing changed (or ``force``); ``True`` when the set
        of allowed keys changed. A folder that vanished or emptied allows nobody (logged)."""
        listing = _listing(self.directory)
        if listing == self._listing and not force:
            return False
        self._listing = listing
        keys, problems = (read_client_keys(self.directory) if listing is not None
                          else (frozenset(), [f"{self.directory} is not a readable directory"]))
        for problem in problems:
            log.warning("curve_clients_dir: skipped %s", problem)
        changed, before = keys != self.keys, len(self.keys)
        self.keys = keys
        if changed:
            (log.warning if not keys else log.info)(
                "curve_clients_dir: %d client keys allowed (were %d)%s", len(keys), before,
                "; no client can connect" if not keys else "")
        return changed

    def callback(self, domain: str, key: bytes) -> bool:
        """pyzmq's ZAP credentials provider: admit a handshake of z85 public ``key``?"""
        return key in self.keys

    def allows(self, user_id: str) -> bool:
        """Is the ZAP user id of a message (its z85 public key) still allowed?"""
        return user_id.encode() in self.keys


@dataclass(frozen=True)
class ServerCurve:
    """The daemon's CURVE key pair and the allow-list of its clients."""

    public: bytes
    secret: bytes
    clients: ClientKeys

    @classmethod
    def load(cls, secret_key_file: str, clients_dir: str) -> ServerCurve:
        """Read the certificate and the allow-list; :class:`AccessError` names the field."""
        import zmq.auth

        try:
            public, secret = zmq.auth.load_certificate(secret_key_file)
        except (OSError, ValueError) as e:
            raise AccessError(f"curve_secret_key_file: cannot read {secret_key_file}: {e}"
                              ) from None
        if secret is None:
            raise AccessError(f"curve_secret_key_file: {secret_key_file} has no secret key (use "
                              f"the .key_secret file `asymcache keys server DIR` wrote)")
        clients = ClientKeys(clients_dir)
        clients.load()
        return cls(public, secret, clients)

    def secure(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server with this key pair (the context's authenticator,
        started by ``RouterSocket``, admits its clients)."""
        sock.curve_server = True
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
