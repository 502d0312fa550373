"""Which request state decodes each pattern, and what DEFAULT_DIFFUSION means per model family.

The one place that names every state class: :mod:`~dlm_runtime.engine.states`' own and those in
modules of their own, such as :mod:`~dlm_runtime.engine.seeded_blocks`."""

from __future__ import annotations

from dlm_runtime.decoding import Pattern
from dlm_runtime.engine.seeded_blocks import SeededBlockState
from dlm_runtime.engine.states import STATES, RequestState

__all__ = ["DEFAULT_PATTERNS", "STATE_BY_PATTERN"]

STATE_BY_PATTERN: dict[Pattern, type[RequestState]] = STATES | {
    SeededBlockState.pattern: SeededBlockState
}

# Each family's own diffusion mode (Pattern.DEFAULT_DIFFUSION); BIDIRECTIONAL for the others.
# Nemotron-Labs-Diffusion's generate() seeds each block causally and writes it in a forward of
# its own (SeededBlockState).
DEFAULT_PATTERNS = {
    "dlm": Pattern.PREFIX_CAUSAL,
    "nemotron_labs_diffusion": SeededBlockState.pattern,
}
