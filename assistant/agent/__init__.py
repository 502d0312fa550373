"""The turn loop: prompts, entity slots, decoding modes, tool-call parsing and history trimming."""
