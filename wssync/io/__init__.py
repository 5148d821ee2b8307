"""The I/O floor: the reactor, its lanes and timers, transports (plain and TLS), the listener,
and the pacing and watchdog that keep code on the reactor honest.

Nothing here knows HTTP or WebSocket: these modules move bytes between sockets and
protocol objects and never parse them.
"""
