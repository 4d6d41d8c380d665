"""The dashboard's page, script and style, served from this package (no CDN, no external request):
the page is built here, the script and style are `dashboard_assets/app.js` and `app.css`.

The script draws its charts as SVG itself (a few lines, no chart library) and holds the API key in the
tab's `sessionStorage`, sent as `X-API-Key`; a `?api_key=` in the address is moved there and stripped.
Every panel is a `<section data-panel=…>`; the script fills each one's `.body` on every refresh.
"""

from __future__ import annotations

from importlib.resources import files

PANELS = (
    ("live", "Live sessions and connections"),
    ("requests", "Requests and errors by code and route"),
    ("ttft", "First token (s)"),
    ("itl", "Inter-token latency (s)"),
    ("throughput", "Tokens/s"),
    ("tool", "Tool classifier"),
    ("bargein", "Barge-in: cancel to slot free (s)"),
    ("warm", "Warm hits"),
    ("engine", "Engine"),
    ("refusals", "Refusals by kind"),
    ("keys", "Usage per key"),
    ("slo", "SLO"),
)

PAGE = (
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Yap dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="stylesheet" href="dashboard/app.css">
</head><body>
<header><h1>Yap</h1><span id="at"></span><span id="err"></span>
<form id="keyform" hidden><label>API key <input id="key" type="password" autocomplete="off"></label>
<button type="submit">Open</button></form><button id="forget" type="button" hidden>Forget key</button></header>
<main id="panels">
"""
    + "\n".join(
        f'<section data-panel="{name}"><h2>{title}</h2><div class="body"></div></section>' for name, title in PANELS
    )
    + """
</main>
<script src="dashboard/app.js"></script>
</body></html>
"""
)

_ASSETS = files(__package__) / "dashboard_assets"
SCRIPT = (_ASSETS / "app.js").read_text(encoding="utf-8")
STYLE = (_ASSETS / "app.css").read_text(encoding="utf-8")
