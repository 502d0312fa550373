"""The Redis bus: key names, versioned turn and event schemas, and the thin stream layer."""
