"""HTTP/1.1: the Sans-I/O parser, writer and server state, the request and response values,
the upload body pipe, the connection object that glues them to a transport, and WSGI.

Nothing here imports the WebSocket package except through the protocol registry.
"""
