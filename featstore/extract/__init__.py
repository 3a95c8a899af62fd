"""Feature extraction: each backbone runs once per data set split, into a root."""

from featstore.extract.config import ExtractConfig
from featstore.extract.pipeline import ExtractResult, extract, extract_one, key_inputs

__all__ = ["ExtractConfig", "ExtractResult", "extract", "extract_one", "key_inputs"]
