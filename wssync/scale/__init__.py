"""More than one process or host: the supervisor and its workers, the relay between
workers, brokers between hosts, and the code reloader.  Records and counts only: never
HTTP, frames or the app.
"""
