"""What an answer says about itself: the "I don't know" detector.

The flagger (an answer that gave up although sources were found) and the quality monitor
(the share of such answers per alias) must agree on what giving up looks like.
"""

from __future__ import annotations

import re

_IDK = re.compile(
    r"\b(i (?:do not|don't|dont) know|i'?m not sure|i am not sure|i cannot (?:find|answer)"
    r"|i can't (?:find|answer)|no information|not (?:mentioned|provided|stated) in the sources"
    r"|the sources do not (?:say|contain|mention))\b",
    re.IGNORECASE,
)


def says_idk(answer: str) -> bool:
    return bool(_IDK.search(answer))
