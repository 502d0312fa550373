"""The turn loop: prompts, decoding modes, tool-call parsing and history trimming."""
