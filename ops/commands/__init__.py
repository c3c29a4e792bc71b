"""One module per ``asymcache`` subcommand (see ``ops/cli.py`` for the module contract)."""
