"""mltag service: serves one artifact with FastAPI + ONNX Runtime. Never imports torch."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mltag")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
