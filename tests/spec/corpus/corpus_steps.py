"""Step functions and values the broken workflows of this folder point to."""

THRESHOLD = 3
GREETING = "hello"
NAMES = ["a", "b"]
TABLE = {"a": 1}
NOTHING = None
RATIO: float = 0.5


def slow(seconds: float, x: int = 0) -> int:
    return x


def pair(left, right, *, scale=1):
    return (left + right) * scale


def only_positional(x, /):
    return x


def keyword_only(*, level):
    return level


def anything(**options):
    return options


def numbers(n: int) -> list:
    return list(range(n))
