"""The source role (`ibstream serve --bus nats://...`): the link, the publisher and the
control responder of one server, joined to its hub.

Started before the server takes clients and stopped after its hub closed, so
`source_started` is the first message of this server_id on the bus and the last
`stream_closed` events still go out. NATS not being there never stops the server: the link
keeps trying in the background while the publisher buffers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ibstream.bus.control import ControlResponder
from ibstream.bus.holds import Holds
from ibstream.bus.link import BusLink, stream_config
from ibstream.bus.publisher import BusPublisher
from ibstream.server.hub import Hub
from ibstream.server.settings import ServerSettings

log = logging.getLogger(__name__)


@dataclass(eq=False)
class SourceBus:
    link: BusLink
    publisher: BusPublisher
    control: ControlResponder

    @classmethod
    async def start(cls, hub: Hub, settings: ServerSettings) -> SourceBus:
        assert settings.bus is not None
        config = stream_config(settings.bus_max_age, settings.bus_max_bytes, settings.bus_replicas)
        link = BusLink(settings.bus, config)
        publisher = BusPublisher(link, hub.server_id, capacity=settings.bus_buffer)
        bus = cls(link, publisher, ControlResponder(hub, Holds(hub), lambda: bus.status()))
        link.on_connect.append(bus.control.subscribe)
        publisher.start()
        hub.bus = publisher  # from now on every numbered tick goes to the bus too
        await link.start()
        return bus

    def status(self) -> dict:
        return {
            **self.publisher.status(),
            "holds": self.control.holds.status(),
            "control_answered": self.control.answered,
            "control_refused": self.control.refused,
        }

    async def stop(self) -> None:
        """After the hub closed: publish what is buffered (briefly), then disconnect."""
        await self.control.stop()
        await self.publisher.stop()
        await self.link.stop()
