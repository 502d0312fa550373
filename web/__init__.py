"""The gateway process: protocol v1 over WebSocket, the pages, /healthz, /readyz, /metrics."""
