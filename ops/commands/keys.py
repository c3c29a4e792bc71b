"""``asymcache keys``: CURVE certificates for the daemon and its clients (docs/security.md).

::

    asymcache keys server DIR                              # DIR/server.key, DIR/server.key_secret
    asymcache keys client NAME DIR [--allow CLIENTS_DIR]   # DIR/NAME.key, DIR/NAME.key_secret

Each pair is a public certificate (``.key``, safe to hand out) and a secret one
(``.key_secret``, mode 600), in the ``zmq.auth`` format. ``--allow`` also copies the client's
public certificate into the daemon's ``curve_clients_dir`` (atomically: a running daemon reads
the folder again within about a second and admits the client; deleting the file revokes it).
Existing files are never overwritten. Exit status 0, or 2 with a message.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

NAME = "keys"
HELP = "make CURVE certificates for the daemon (server) and its clients (client NAME)"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="role", metavar="ROLE", required=True)
    server = sub.add_parser("server", help="the daemon's key pair (curve_secret_key_file)")
    server.add_argument("dir", metavar="DIR", help="folder to write server.key(_secret) into")
    client = sub.add_parser("client", help="a client's key pair (an engine, a tool)")
    client.add_argument("name", metavar="NAME", help="the client's name: letters, digits, ._-")
    client.add_argument("dir", metavar="DIR", help="folder to write NAME.key(_secret) into")
    client.add_argument("--allow", metavar="CLIENTS_DIR",
                        help="also copy NAME.key into this curve_clients_dir (admitted live)")


def make_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``name.key`` and ``name.key_secret`` (mode 600) into ``directory``; ``ValueError``
    for a bad name or when either file exists."""
    import zmq.auth

    if not _NAME.fullmatch(name):
        raise ValueError(f"NAME must be 1-64 letters, digits, '.', '_' or '-' (not starting "
                         f"with '.', '_' or '-'), got {name!r}")
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise ValueError(f"{path} exists: keys are never overwritten (choose another name, "
                             f"or remove the old pair first)")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    umask = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        zmq.auth.create_certificates(directory, name)
    finally:
        os.umask(umask)
    public.chmod(0o644)
    return public, secret


def allow(public: Path, clients_dir: Path) -> Path:
    """Copy the public certificate ``public`` into ``clients_dir`` (rename: never half read)."""
    target = clients_dir / public.name
    if target.exists():
        raise ValueError(f"{target} exists: remove it first to replace that client's key")
    clients_dir.mkdir(parents=True, exist_ok=True)
    partial = clients_dir / f".{public.name}.partial"  # not *.key: the daemon ignores it
    partial.write_bytes(public.read_bytes())
    partial.chmod(0o644)
    os.replace(partial, target)
    return target


def run(args: argparse.Namespace) -> int:
    directory = Path(args.dir)
    name = "server" if args.role == "server" else args.name
    try:
        public, secret = make_pair(directory, name)
        allowed = allow(public, Path(args.allow)) if getattr(args, "allow", None) else None
    except (ValueError, OSError) as e:
        print(f"asymcache keys: {e}", file=sys.stderr)
        return 2
    print(f"wrote {public} (public) and {secret} (secret, mode 600)")
    if args.role == "server":
        print(f"daemon:  curve_secret_key_file = {secret}\n"
              f"         curve_clients_dir = a folder of the clients' public certificates "
              f"(asymcache keys client NAME DIR --allow FOLDER)\n"
              f"clients: need {public} (the server's public key)")
    elif allowed is not None:
        print(f"allowed: {allowed} (a running daemon admits {name} within about a second; "
              f"delete the file to revoke it)")
    else:
        print(f"allow:   copy {public} into the daemon's curve_clients_dir (read again within "
              f"about a second; delete it to revoke)")
    if args.role == "client":
        print(f"client:  ClientCurve.from_files(SERVER_DIR/server.key, {secret}) "
              f"(asymcache.cacheserver.protocol.sockets; CacheClient(curve=...))")
    return 0
