"""The command line and ``serve``: what starts processes (the embedded Redis included)."""
