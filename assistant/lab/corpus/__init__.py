"""Generated conversations for training and evaluating the bundled model.

Every phrasing list is split by construction: each fifth template is held out, and held-out
conversations use the store's held-out orders and exercises, so the evaluation never sees a
template or an entity value that training saw. Every eighth of the remaining phrasings is
the dev split, also never trained on, for choosing checkpoints (``phrases.Phrases``).
"""
