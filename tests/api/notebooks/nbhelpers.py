"""A project module that the notebook's steps import (it sits next to the notebook)."""


def twice(value: int) -> int:
    return 2 * value
