"""jaxcult's TFDS builders (array_record, no TensorFlow): `prepare` and `load` by short name.

Names are `jaxcult:<dataset>` (or just `<dataset>`); TFDS registers the classes as
`jaxcult_<dataset>`, so `tfds.builder("jaxcult_xcopa", data_dir=...)` finds prepared data too.
"""

from __future__ import annotations

from pathlib import Path

from jaxcult.errors import UserError

DEFAULT_DATA_DIR = Path("~/.cache/jaxcult/tfds").expanduser()


def _builders() -> dict:
    from jaxcult.data.tfds.dialogue import JaxcultChat, JaxcultSurvey
    from jaxcult.data.tfds.text import JaxcultPawsx, JaxcultSquad, JaxcultXcopa, JaxcultXnli
    from jaxcult.data.tfds.vqa import JaxcultEasyVqa, JaxcultXgqa

    return {"xcopa": JaxcultXcopa, "pawsx": JaxcultPawsx, "xnli": JaxcultXnli,
            "squad": JaxcultSquad, "xgqa": JaxcultXgqa, "easy_vqa": JaxcultEasyVqa,
            "chat": JaxcultChat, "survey": JaxcultSurvey}


def builder(name: str, *, data_dir: str | Path | None = None, manual_dir: str | Path | None = None):
    short = name.removeprefix("jaxcult:")
    builders = _builders()
    if short not in builders:
        raise UserError(f"unknown dataset {name!r} (available: "
                        f"{', '.join(f'jaxcult:{n}' for n in builders)})")
    return builders[short](data_dir=str(Path(data_dir or DEFAULT_DATA_DIR).expanduser()),
                           manual_dir=manual_dir)


def prepare(name: str, *, data_dir: str | Path | None = None,
            manual_dir: str | Path | None = None):
    """Prepare once (array_record files under data_dir) and return the builder."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    dataset = builder(name, data_dir=data_dir, manual_dir=manual_dir)
    dataset.download_and_prepare()
    return dataset


def prepared_builder(name: str, *, data_dir: str | Path | None = None):
    """The builder of a dataset prepared under data_dir (its info: splits, files, features)."""
    dataset = builder(name, data_dir=data_dir)
    if not dataset.is_prepared():
        raise UserError(f"{name}: not prepared under {dataset.data_dir}; run "
                        f"`jaxcult data prepare {name} --manual-dir DIR` first")
    return dataset


def load(name: str, *, data_dir: str | Path | None = None) -> dict:
    """Random-access data sources of a prepared dataset, one per split (`tfds.data_source`)."""
    return prepared_builder(name, data_dir=data_dir).as_data_source()
