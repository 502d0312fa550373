"""Generated conversations for training and evaluating the bundled model.

Every phrasing list is split by construction: each fifth template is held out, and held-out
conversations use the store's held-out orders and exercises, so the evaluation never sees a
template or an entity value that training saw. Every eighth of the remaining phrasings is
the dev split, also never trained on, for choosing checkpoints (``phrases.Phrases``).
"""

# Every list gets its written training phrasings whichever corpus module is imported first, so
# the corpus, the evaluation's dev sets and the split tests all see the same lists.
from assistant.lab.corpus import written_phrasings as _written_phrasings  # noqa: F401
