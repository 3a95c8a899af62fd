"""Analysis of feature spaces: the singular-value spectrum (docs/tune.md: `featstore spectrum`)."""

from featstore.analysis.spectrum import (PREPROCESSING, Spectrum, gram_from_chunks, lsvr, singular_values,
                       spectrum_of_store, sve)

__all__ = ["PREPROCESSING", "Spectrum", "gram_from_chunks", "lsvr", "singular_values",
           "spectrum_of_store", "sve"]
