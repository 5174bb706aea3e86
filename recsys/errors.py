"""Library errors turned into one line of a message: what the user sees instead of a traceback."""

from __future__ import annotations

MAX_REASON_CHARACTERS = 200


def reason_of(error: BaseException) -> str:
    """The informative line of `error`: torch's "Error(s) in loading state_dict for X:" headers skipped,
    cut to a readable length."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    reason = lines[1] if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    if len(reason) > MAX_REASON_CHARACTERS:
        reason = reason[: MAX_REASON_CHARACTERS - 3] + "..."
    return reason
