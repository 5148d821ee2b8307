"""Public path for the TLS helpers README names (``from wssync.tls import server_context``).

The code lives in :mod:`wssync.io.tls`; this module only re-exports it.
"""

from .io.tls import server_context

__all__ = ["server_context"]
