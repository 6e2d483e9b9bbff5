"""The rule for a rollout's canary steps, applied wherever steps come in: the settings
(``rollout_steps``), the rollout policy and the ``POST /v1/admin/rollouts`` body."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise


def check_rollout_steps(steps: Sequence[int]) -> None:
    """Refuse steps that are not percentages rising strictly from above 0 to exactly 100:
    a step that does not raise the candidate's share would hold it at the same weight."""
    if not steps or any(not 0 < step <= 100 for step in steps):
        raise ValueError("steps: each must be a percentage in 1..100")
    if any(later <= earlier for earlier, later in pairwise(steps)):
        raise ValueError("steps: must rise")
    if steps[-1] != 100:
        raise ValueError("steps: must end at 100")
