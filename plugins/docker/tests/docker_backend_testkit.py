"""Helpers shared by the Docker backend's tests (a uniquely named module: every plugin has a conftest)."""
import itertools
import uuid

#: This session's id; everything the tests make is named with PREFIX so cleanup can find it.
RUN_ID = uuid.uuid4().hex[:6]
PREFIX = f"hpt{RUN_ID}"
_spaces = itertools.count(1)


def new_space(stem: str = "s") -> str:
    """A space name unique in this session."""
    return f"{stem}{next(_spaces)}"
