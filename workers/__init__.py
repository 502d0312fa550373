"""The worker process: claim turns from Redis, run the agent loop on the engine, publish events."""
