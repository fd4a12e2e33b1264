"""Exception classes of flowerlab.

Every error a user can cause (bad input data, a failed download, a wrong setting) is raised
as a `FlowerlabError` subclass whose message says what is wrong and what to do about it, so
the command line can print it as one clear line instead of a traceback deep in a library.
Import the base class to catch all of them: `from flowerlab.errors import FlowerlabError`.
"""

from __future__ import annotations


class FlowerlabError(Exception):
    """Base class of every error flowerlab raises on purpose (bad input, not a bug)."""


class ConfigError(FlowerlabError):
    """A setting is missing, invalid, or inconsistent with another one."""


class DataError(FlowerlabError):
    """The input photos, inventory, TFRecords or manifest are missing or inconsistent."""


class DownloadError(FlowerlabError):
    """Downloading failed: offline, HTTP error, wrong size or checksum."""


class ExtractError(DataError):
    """An archive could not be extracted safely (unsafe member, corrupt archive)."""
