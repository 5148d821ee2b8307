"""The TLS option the anchor apps share: ``--certfile``/``--keyfile`` to a server context."""

from __future__ import annotations

import ssl
from typing import Optional


def tls_context(certfile: Optional[str], keyfile: Optional[str]) -> Optional[ssl.SSLContext]:
    """A server context for ``--certfile``/``--keyfile`` (TLS 1.2+), or None: plain."""
    if not certfile:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certfile, keyfile)
    return context
