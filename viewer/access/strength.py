"""Whether a password is too easy to guess: on a list of breached passwords, close to the username, or
scored weak by zxcvbn, a strength estimator that knows keyboard patterns, repeats, dates, names and its
own frequency lists of common passwords and words (issue 15 item 6)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from zxcvbn import zxcvbn

# zxcvbn scores 0 (under 10^3 guesses) to 4 (10^10 or more); 3 is over 10^8 guesses, which the sign-in
# throttle (viewer/access/throttle.py) keeps out of reach of online guessing.
DEFAULT_MIN_SCORE = 3
# zxcvbn refuses longer input and its matching grows faster than linearly: a longer password is scored
# on its start, which it is at least as hard to guess as.
ESTIMATED_CHARACTERS = 72
COMMON_PASSWORDS = Path(__file__).with_name("data") / "common_passwords.txt"
SCORE_NAMES = ("very weak", "very weak", "weak", "fair", "strong")


@cache
def _common() -> frozenset[str]:
    lines = COMMON_PASSWORDS.read_text(encoding="utf-8").splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#"))


def weakness(password: str, *, username: str = "", min_score: int = DEFAULT_MIN_SCORE) -> str | None:
    """Why ``password`` may not be used, as a clause a person can act on, or None."""
    if password.lower() in _common():
        return "that password is on a list of passwords stolen in data breaches: choose another"
    if len(username) >= 3 and username.lower() in password.lower():
        return "a password may not contain the user name"
    result = zxcvbn(password[:ESTIMATED_CHARACTERS], user_inputs=[username] if username else [])
    if result["score"] >= min_score:
        return None
    # Lower case and no full stop inside: callers add the capital and the full stop.
    advice = [result["feedback"]["warning"], *result["feedback"]["suggestions"]]
    said = "; ".join(line.rstrip(".").lower() for line in advice if line) or "it is easy to guess"
    return f"that password is {SCORE_NAMES[result['score']]}: {said}"
