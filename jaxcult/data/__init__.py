"""Datasets and batching: the dataset registry, readers of each dataset's files, tokenised
splits and iterators. Importing this package registers the built-in datasets."""

from jaxcult.data import copa as _copa  # noqa: F401  (registers)
from jaxcult.data import lm as _lm  # noqa: F401  (registers)
from jaxcult.data import multilingual as _multilingual  # noqa: F401  (registers)
from jaxcult.data import pairs as _pairs  # noqa: F401  (registers)
from jaxcult.data import preference as _preference  # noqa: F401  (registers)
from jaxcult.data import squad as _squad  # noqa: F401  (registers)
from jaxcult.data import vqa as _vqa  # noqa: F401  (registers)
from jaxcult.data.registry import DATASETS, Dataset, DatasetInfo, register_dataset, resolve_dataset

__all__ = ["DATASETS", "Dataset", "DatasetInfo", "register_dataset", "resolve_dataset"]
