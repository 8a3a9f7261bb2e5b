"""Folders and object-store prefixes (``s3://bucket/prefix``, ``gs://...``) through one small interface.

pyarrow's filesystems do the work; an ``s3://`` URI takes its endpoint and credentials from the standard
AWS environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION``) or the machine's instance role, as Ray Train's storage does. In an object store
an object appears whole when its upload completes: a reader never sees half of one.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from h2crop_core.errors import SettingError
from h2crop_core.files import write_atomic


def is_uri(location: str | os.PathLike) -> bool:
    return "://" in str(location)


def filesystem(location: str):
    """(pyarrow filesystem, path inside it) of a local folder or a URI."""
    from pyarrow import fs

    if not is_uri(location):
        return fs.LocalFileSystem(), os.path.abspath(location)
    try:
        return fs.FileSystem.from_uri(location)
    except (ValueError, OSError) as error:  # an unknown scheme, a malformed bucket name
        raise SettingError(f"{location}: not a storage URI pyarrow can open ({error})") from None


class Remote:
    """Files under one prefix of an object store (or a folder), addressed by their relative names."""

    def __init__(self, location: str) -> None:
        from pyarrow import fs

        self.location = location.rstrip("/")
        self.fs, self.root = filesystem(self.location)
        self.local = isinstance(self.fs, fs.LocalFileSystem)

    def _path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def names(self, folder: str = "") -> set[str]:
        """Relative names of the files in ``folder`` (not recursive); empty where nothing is stored."""
        from pyarrow import fs

        base = self._path(folder).rstrip("/")
        infos = self.fs.get_file_info(fs.FileSelector(base, allow_not_found=True))
        return {info.path[len(base) :].lstrip("/") for info in infos if info.type == fs.FileType.File}

    def exists(self, name: str) -> bool:
        from pyarrow import fs

        return self.fs.get_file_info(self._path(name)).type == fs.FileType.File

    def read_text(self, name: str) -> str:
        with self.fs.open_input_stream(self._path(name)) as source:
            return source.read().decode()

    def write(self, name: str, write: Callable[[BinaryIO], object]) -> None:
        """Call ``write(file)`` for the object ``name``: in a folder through a temporary name and a rename
        (:func:`~h2crop_core.files.write_atomic`), in an object store as one upload."""
        path = self._path(name)
        if self.local:
            write_atomic(path, write)
            return
        with self.fs.open_output_stream(path) as target:
            write(target)

    def upload(self, local: str | Path, name: str) -> None:
        with open(local, "rb") as source:
            self.write(name, lambda target: shutil.copyfileobj(source, target, 1 << 20))

    def download(self, name: str, local: str | Path) -> Path:
        with self.fs.open_input_stream(self._path(name)) as source:
            return write_atomic(local, lambda target: shutil.copyfileobj(source, target, 1 << 20))

    def delete(self, name: str) -> None:
        try:
            self.fs.delete_file(self._path(name))
        except FileNotFoundError:  # already gone
            pass
