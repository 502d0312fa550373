"""Tools the assistant can call: each with a JSON schema, tenant-scoped, with timeouts."""
