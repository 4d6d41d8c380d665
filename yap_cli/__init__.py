"""The `yap` command line: serve, demo, install, client, bench, soak, infer, scenario, server, quant, tool.

Nothing in `yap_engines`, `yap_server` or `quant` imports this package."""
