"""Every route of the server and user routers is documented in docs/http.md (method and path)."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.routing import APIRoute

from api import servers, users

DOC = Path(__file__).resolve().parents[2] / "docs" / "http.md"


def _shape(path: str) -> str:
    """A path with its parameters blanked: ``/v1/servers/{server_id}`` and ``/v1/servers/{id}`` match."""
    return re.sub(r"\{[^}]*\}", "{}", path.split("?")[0])


def test_every_route_is_in_http_md() -> None:
    documented = {(m, _shape(p)) for m, p in re.findall(r"^\| `([A-Z]+) (/[^`]*)`", DOC.read_text(), re.M)}
    routes = [r for router in (servers.router, users.router) for r in router.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 40
    missing = sorted(f"{m} {r.path}" for r in routes for m in r.methods or () if (m, _shape(r.path)) not in documented)
    assert not missing, f"undocumented in docs/http.md: {missing}"
