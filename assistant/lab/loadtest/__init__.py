"""The load generator: scripted WebSocket conversations against a running deployment."""
