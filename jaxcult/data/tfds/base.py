"""Shared machinery of jaxcult's TFDS builders: array_record output (no TensorFlow needed to
prepare or read), preparation from local files (`manual_dir`) or the official download URLs,
and dataset info declared in code rather than in metadata files next to the module."""

from __future__ import annotations

from pathlib import Path

import tensorflow_datasets as tfds

from jaxcult.errors import UserError

FILE_FORMAT = "array_record"


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder whose sources are local files under `manual_dir` when given, otherwise the
    dataset's official URLs fetched (and checksummed on first download) by TFDS' download
    manager. Subclasses define FEATURES, DESCRIPTION, HOMEPAGE, URLS and `_splits(root)`."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.1.0": "Examples keep their source files' order (training reads prepared "
                              "splits in the same order as the local files).",
                     "1.0.0": "First release."}
    FEATURES: dict = {}
    DESCRIPTION = ""
    HOMEPAGE = ""
    # layout path under the source root -> (official URL, path inside the extracted archive)
    URLS: dict[str, tuple[str, str]] = {}

    def __init__(self, *, manual_dir: str | Path | None = None, **kwargs) -> None:
        self._local = Path(manual_dir).expanduser() if manual_dir is not None else None
        kwargs.setdefault("file_format", FILE_FORMAT)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        # unshuffled: the files' order, so training reads the same batches from either source
        return tfds.core.DatasetInfo(builder=self, description=self.DESCRIPTION,
                                     features=tfds.features.FeaturesDict(self.FEATURES),
                                     homepage=self.HOMEPAGE, disable_shuffling=True)

    def _root(self, dl_manager) -> Path:
        """Where the source files are: `manual_dir`, or the downloaded-and-extracted URLs."""
        if self._local is not None:
            if not self._local.is_dir():
                raise UserError(f"{self._local}: manual_dir is not a folder")
            return self._local
        if not self.URLS:
            raise UserError(f"{self.name}: prepares from local files only; pass manual_dir")
        fetched = dl_manager.download_and_extract({k: url for k, (url, _) in self.URLS.items()})
        root = Path(dl_manager.download_dir) / f"{self.name}-layout"
        for relative, (_, inner) in self.URLS.items():
            link = root / relative
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(Path(fetched[relative]) / inner if inner else Path(fetched[relative]))
        return root

    def _split_generators(self, dl_manager):
        splits = self._splits(self._root(dl_manager))
        return {name: self._generate_examples(records) for name, records in splits.items()}

    def _generate_examples(self, records):
        for index, record in enumerate(records):
            yield index, record

    def _splits(self, root: Path) -> dict[str, list[dict]]:
        raise NotImplementedError
