"""Public path for the Redis broker README names (``wssync.redis_broker.RedisBroker``).

The code lives in :mod:`wssync.scale.redis_broker`; this module only re-exports it.
"""

from .scale.redis_broker import RedisBroker

__all__ = ["RedisBroker"]
