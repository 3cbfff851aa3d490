"""Robot data -> Episodes -> auxiliary corpora as webdataset shards; the demo tabletop sim; FAST tokens."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vlm4vla-toolkit")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
