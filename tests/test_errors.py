"""Every user error of h2crop survives a process boundary as itself, and the CLI can find it in a wrapper."""

from __future__ import annotations

import importlib
import pkgutil
from concurrent.futures import ProcessPoolExecutor

import pytest

import h2crop_core
from h2crop_core.data.reader import SampleError
from h2crop_core.errors import H2CropError, MissingFileError, SettingError, find_user_error

#: constructor arguments of the error classes that take more than a message.
ARGS = {SampleError: ("/data/h5_data/a.h5", "S2_data", "shape (12, 10, 192, 192)", "shape (12, 10, 96, 96)")}


def _all_modules() -> list[str]:
    names = [h2crop_core.__name__]
    names += [info.name for info in pkgutil.walk_packages(h2crop_core.__path__, prefix=f"{h2crop_core.__name__}.")]
    for name in names:
        importlib.import_module(name)
    return names


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _subclasses(sub)
    return found


_all_modules()
ERRORS = sorted(
    (cls for cls in _subclasses(H2CropError) | {H2CropError} if cls.__module__.startswith("h2crop_core")),
    key=lambda c: f"{c.__module__}.{c.__qualname__}",
)


def _args(cls: type) -> tuple:
    return ARGS.get(cls, (f"/data/region/s2.tif: a problem of the kind {cls.__name__} reports",))


def _raise(cls: type, args: tuple) -> None:
    raise cls(*args)


@pytest.fixture(scope="module")
def pool():
    with ProcessPoolExecutor(max_workers=2) as executor:
        yield executor


def test_every_error_module_was_found():
    names = {cls.__name__ for cls in ERRORS}
    assert {
        "H2CropError",
        "SettingError",
        "MissingFileError",
        "SampleError",
        "DatasetError",
        "RegionError",
        "CheckpointError",
    } <= names


@pytest.mark.parametrize("cls", ERRORS, ids=lambda c: c.__name__)
def test_an_error_raised_in_a_worker_process_arrives_as_itself(cls, pool):
    expected = cls(*_args(cls))  # a class taking other arguments than a message needs an entry in ARGS
    with pytest.raises(cls) as info:
        pool.submit(_raise, cls, _args(cls)).result()
    assert type(info.value) is cls and str(info.value) == str(expected)
    assert isinstance(info.value, ValueError)  # callers that caught ValueError still do


def test_a_missing_file_is_also_a_file_not_found_error():
    assert issubclass(MissingFileError, FileNotFoundError)


class _FrameworkError(Exception):
    """Like Ray's task errors: the original error as a ``cause`` attribute."""

    def __init__(self, cause: BaseException):
        super().__init__("a task failed")
        self.cause = cause


def test_find_user_error_looks_through_causes_wrappers_and_worker_failures():
    error = SettingError("--tile: must be a multiple of 96, got 100")
    try:
        try:
            raise error
        except SettingError as inner:
            raise RuntimeError("the run failed") from inner
    except RuntimeError as outer:
        assert find_user_error(outer) is error
    assert find_user_error(_FrameworkError(_FrameworkError(error))) is error
    training = RuntimeError("training failed")
    training.worker_failures = {0: RuntimeError("a bug elsewhere"), 1: _FrameworkError(error)}
    assert find_user_error(training) is error
    assert find_user_error(error) is error


def test_find_user_error_finds_nothing_in_plain_errors():
    assert find_user_error(ValueError("a bug")) is None
    chained = RuntimeError("outer")
    chained.__cause__ = ValueError("inner")
    assert find_user_error(chained) is None
    a, b = _FrameworkError(ValueError("x")), _FrameworkError(ValueError("y"))
    a.cause, b.cause = b, a  # a cycle ends at the depth limit
    assert find_user_error(a) is None
