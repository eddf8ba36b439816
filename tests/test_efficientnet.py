"""EfficientNet-Lite0 port vs a PyTorch reference (written here, on the released weights) on
real easy-VQA images."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxcult import assets

torch = pytest.importorskip("torch")
F = torch.nn.functional

pytestmark = pytest.mark.skipif(
    not (assets.get_asset("efficientnet-lite0").installed() and assets.get_asset("easy-vqa").installed()),
    reason="efficientnet-lite0 / easy-vqa assets not installed")


def _same_pad(x, kernel: int, stride: int):
    """TF SAME padding (the extra pixel at the bottom/right)."""
    size = x.shape[-1]
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))


def _conv_bn(state, x, conv: str, bn: str, stride: int = 1, groups: int = 1, act: bool = True):
    weight = state[f"{conv}.weight"]
    x = F.conv2d(_same_pad(x, weight.shape[-1], stride), weight, stride=stride, groups=groups)
    x = F.batch_norm(x, state[f"{bn}.running_mean"], state[f"{bn}.running_var"],
                     state[f"{bn}.weight"], state[f"{bn}.bias"], training=False, eps=1e-3)
    return F.relu6(x) if act else x


def torch_lite0(state, pixels):
    """EfficientNet-Lite0 feature map from the state dict, following the paper's block table."""
    x = _conv_bn(state, pixels, "_conv_stem", "_bn0", stride=2)
    strides = {1: 2, 3: 2, 5: 2, 11: 2}  # first block of each stride-2 stage
    i = 0
    while f"_blocks.{i}._project_conv.weight" in state:
        b = f"_blocks.{i}"
        y = x
        if f"{b}._expand_conv.weight" in state:
            y = _conv_bn(state, y, f"{b}._expand_conv", f"{b}._bn0")
        y = _conv_bn(state, y, f"{b}._depthwise_conv", f"{b}._bn1", stride=strides.get(i, 1),
                     groups=y.shape[1])
        y = _conv_bn(state, y, f"{b}._project_conv", f"{b}._bn2", act=False)
        x = y + x if y.shape == x.shape else y
        i += 1
    return _conv_bn(state, x, "_conv_head", "_bn1")


def test_lite0_matches_pytorch_reference_on_easy_vqa_images(tmp_path, monkeypatch):
    from PIL import Image

    import jaxcult.hub.vision as vision
    from jaxcult.models.vision.efficientnet import preprocess

    monkeypatch.setattr(vision, "CACHE_DIR", tmp_path)
    root = assets.get_asset("easy-vqa").path()
    images = np.stack([np.asarray(Image.open(root / "test" / "images" / f"{i}.png").convert("RGB"))
                       for i in range(4)])
    model = vision.load_backbone("efficientnet-lite0")
    assert (tmp_path / "efficientnet-lite0.safetensors").is_file()
    state = torch.load(assets.get_asset("efficientnet-lite0").path(), weights_only=True)
    for size in (160,):  # odd feature-map sizes on the way: SAME padding adds its extra pixel
        pixels = np.asarray(preprocess(images, size))
        ours = np.asarray(jax.jit(model)(pixels))
        with torch.no_grad():
            theirs = torch_lite0(state, torch.from_numpy(pixels).permute(0, 3, 1, 2))
        theirs = theirs.permute(0, 2, 3, 1).numpy()
        assert ours.shape == theirs.shape == (4, size // 32, size // 32, 1280)
        assert np.abs(ours - theirs).max() <= 1e-4


def test_grid_features_are_computed_once_and_read_back(tmp_path, monkeypatch):
    """easy-VQA records carry pixels; the vqa task turns them into cached grid tokens."""
    import jaxcult.hub.vision as vision
    import jaxcult.tasks.image_features as image_features
    from jaxcult.config import DataConfig
    from jaxcult.data.vqa import EasyVqa
    from jaxcult.hub.pretrained import load_tokenizer
    from jaxcult.tasks import Loaders
    from jaxcult.tasks.vqa import VisualQuestionAnswering

    monkeypatch.setattr(vision, "CACHE_DIR", tmp_path / "weights")
    dataset = EasyVqa()
    config = DataConfig(name="easy_vqa")
    records = dataset.read_eval(config, "zh", "test")[:6]
    task = VisualQuestionAnswering(
        VisualQuestionAnswering.Settings(image_size=64, feature_cache=str(tmp_path / "features")),
        dataset.info(config).labels, Loaders(image_backbone=vision.load_backbone))
    tokenizer = load_tokenizer("multilingual-e5-small") if assets.get_asset(
        "multilingual-e5-small").installed() else load_tokenizer("minilm-l6")
    first = task.tokenize(records, tokenizer, 32, "easy_vqa/zh/test")
    assert first.arrays["visual_features"].shape == (6, 4, 1280)  # 64 px: a 2x2 grid
    assert len(list((tmp_path / "features").glob("*.array_record"))) == 1
    monkeypatch.setattr(image_features, "_compute", lambda *a: pytest.fail("recomputed"))
    again = task.tokenize(records, tokenizer, 32, "easy_vqa/zh/test")
    assert np.allclose(np.asarray(again.arrays["visual_features"]),
                       np.asarray(first.arrays["visual_features"]))
