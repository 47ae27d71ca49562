"""The xiaozhi device protocol without I/O: JSON messages (`messages`), binary framing v1/v2/v3
(`framing`), the client session (`session`), the MCP server core (`mcp`) and UDP audio (`udp`).

Used by the websocket backend and by the MQTT+UDP backend alike (see session.py for the driver loop).
"""
