"""The errors a user can cause and fix: a bad file, key, setting or flag.

Every error class of h2crop that describes the user's input derives from :class:`H2CropError`. The
``h2crop`` command prints such an error as one line naming the file or setting (exit code 2), wherever it
was raised: in the main process, a process pool, a DataLoader worker or a Ray worker. Anything else is a
bug and keeps its traceback. Every subclass must pickle (it crosses process boundaries): one whose
``__init__`` takes other arguments than the message defines ``__reduce__``.
"""

from __future__ import annotations


class H2CropError(ValueError):
    """A problem with the user's input; the message names the file, key or setting and what was expected."""


class SettingError(H2CropError):
    """A setting, option or flag value that is not allowed (the message names the setting)."""


def find_user_error(error: BaseException, _depth: int = 0) -> H2CropError | None:
    """The :class:`H2CropError` behind ``error``, if any: ``error`` itself, its explicit cause (``raise ... from``),
    or an error a framework wrapped it in (Ray's ``cause``, Ray Train's per-worker ``worker_failures``).

    Not ``__context__``: a bug raised while handling a user error must stay a bug, with its traceback.
    """
    if _depth > 12 or error is None:
        return None
    if isinstance(error, H2CropError) and type(error).__module__.startswith(("h2crop_core", "pipelines")):
        return error
    candidates: list[BaseException] = []
    for attribute in ("cause", "__cause__"):
        value = getattr(error, attribute, None)
        if isinstance(value, BaseException) and value is not error:
            candidates.append(value)
    failures = getattr(error, "worker_failures", None)
    if isinstance(failures, dict):
        candidates += [value for value in failures.values() if isinstance(value, BaseException)]
    for candidate in candidates:
        found = find_user_error(candidate, _depth + 1)
        if found is not None:
            return found
    return None


class MissingFileError(H2CropError, FileNotFoundError):
    """A file the user named (or that a dataset root should hold) does not exist."""
