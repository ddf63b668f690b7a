"""The HTTP API: accounts, tokens, channels, membership and history.

What suits request/response goes here; everything real-time goes over MQTT. Routes live in
:mod:`api.routes`, the composition root in :mod:`api.app`. Errors are always
``{"error": {"code", "message"}}`` with a fitting status; the codes are listed in docs/http.md.
"""
