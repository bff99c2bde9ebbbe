"""The web view of a store's requests (issue 12): a WSGI application under ``/ui``.

``make_app(store, api_base=, banner=)`` is what ``fave ui`` serves on its own and what ``fave serve`` mounts
beside its HTTP API. Read-only: the only writes (resume, cancel) are the HTTP API's, called by the browser.
"""

from __future__ import annotations

from fave.web.app import make_app

__all__ = ["make_app"]
