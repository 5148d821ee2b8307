"""What arrives before HTTP at the edge of the network: the PROXY protocol preamble and the
trust rules for forwarded headers.
"""
