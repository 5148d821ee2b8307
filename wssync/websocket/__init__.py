"""WebSocket (RFC 6455, RFC 7692): frames, the Sans-I/O protocol, permessage-deflate, the
opening handshake, the connection object on a transport, and the handle applications use.
"""
