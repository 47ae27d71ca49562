"""Sans-I/O protocol cores: bytes in → events out, events in → bytes out; no sockets, asyncio or clocks."""
