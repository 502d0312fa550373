"""The demo store: a fictional online shop whose catalog, articles and orders the tools read."""
