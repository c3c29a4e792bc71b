"""Run the ``asymcache`` CLI as the torch-free daemon image would: ``torchless.py serve ...``.

The daemon image installs the project without the ``[engine]`` extra, so none of the modules
below exist there. This bootstrap makes importing any of them fail, then runs the CLI: a daemon
that starts and serves under it proves ``asymcache serve`` (and the CLI's command discovery) needs
nothing from the engine's dependencies.
"""

from __future__ import annotations

import importlib.abc
import sys

ENGINE_ONLY = ("torch", "triton", "safetensors", "tokenizers", "transformers", "fastapi",
               "uvicorn", "starlette")


class EngineOnlyBlocker(importlib.abc.MetaPathFinder):
    """Refuses the engine extra's top-level packages, as if they were not installed."""

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname.split(".", 1)[0] in ENGINE_ONLY:
            raise ModuleNotFoundError(f"No module named {fullname!r} (torch-free daemon image)",
                                      name=fullname)
        return None


def main(argv: list[str]) -> int:
    sys.meta_path.insert(0, EngineOnlyBlocker())
    from asymcache.ops.cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
