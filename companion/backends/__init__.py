"""Protocols joined to their transports, each exposing the Backend interface of companion.events."""
