"""Search errors::

    MqchatError
     └── SearchError              the index failed (an operator's problem; HTTP 500/503)
          └── InvalidSearch       the request is wrong; ``code`` is stable and safe to show (HTTP 400)

The codes of :class:`InvalidSearch` are listed in docs/search.md.
"""

from __future__ import annotations

from mqchat.errors import MqchatError


class SearchError(MqchatError):
    """The index failed; the request may be fine. Not for clients verbatim."""


class InvalidSearch(SearchError, ValueError):
    """A search request was refused before it reached the engine.

    Attributes:
        code: stable, machine-readable reason (the table in docs/search.md), e.g. ``empty_query``.
        message: human-readable explanation, safe to show to the user.
    """

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")
