"""Device tools the agent can call over MCP."""
