"""Model zoo: parameter counts and feature layouts against RepDistiller, interface checks, timm wrapper."""
from __future__ import annotations

import functools

import pytest
import torch

from kdcore.models import KDModel, ModelOutput, UnknownModelError, create_model, list_models

ALL_MODELS = [
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
    "vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "ResNet50", "MobileNetV2", "ShuffleV1", "ShuffleV2",
]

# Parameter counts of RepDistiller's models with num_classes=100.
PARAM_COUNTS = {
    "resnet20": 278_324, "resnet32": 472_756, "resnet56": 861_620, "resnet110": 1_736_564,
    "resnet8x4": 1_233_540, "resnet32x4": 7_433_860, "wrn_16_2": 703_284, "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156, "vgg8": 3_965_028, "vgg13": 9_462_180, "ResNet50": 23_705_252,
    "MobileNetV2": 812_836, "ShuffleV1": 949_258, "ShuffleV2": 1_355_528,
}

# RepDistiller's feat[:-1] (channels, spatial size) and feat[-1] width for a 32x32 input,
# read off its model code.
EXPECTED_32 = {
    "resnet20": ([16, 16, 32, 64], [32, 32, 16, 8], 64),
    "resnet8x4": ([32, 64, 128, 256], [32, 32, 16, 8], 256),
    "resnet32x4": ([32, 64, 128, 256], [32, 32, 16, 8], 256),
    "wrn_40_2": ([16, 32, 64, 128], [32, 32, 16, 8], 128),
    "wrn_16_1": ([16, 16, 32, 64], [32, 32, 16, 8], 64),
    "ResNet50": ([64, 256, 512, 1024, 2048], [32, 32, 16, 8, 4], 2048),
    "vgg13": ([64, 128, 256, 512, 512], [32, 16, 8, 4, 4], 512),
    "vgg8": ([64, 128, 256, 512, 512], [32, 16, 8, 4, 4], 512),
    "MobileNetV2": ([16, 12, 16, 48, 160], [16, 16, 8, 4, 2], 1280),
    "ShuffleV1": ([24, 240, 480, 960], [32, 16, 8, 4], 960),
    "ShuffleV2": ([24, 116, 232, 464], [32, 16, 8, 4], 1024),
}


@functools.lru_cache(maxsize=None)
def _model(name: str) -> KDModel:
    torch.manual_seed(0)
    return create_model(name, num_classes=100).eval()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_registry_lists_all_models():
    from tests.test_oki_models import OKI_MODELS  # the seed paper's networks, tested there

    assert sorted(list_models()) == sorted(ALL_MODELS + OKI_MODELS)


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_parameter_count_matches_repdistiller(name):
    assert sum(p.numel() for p in _model(name).parameters()) == PARAM_COUNTS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_32))
def test_feature_shapes_at_32(name):
    channels, sizes, emb_dim = EXPECTED_32[name]
    model = _model(name)
    with torch.no_grad():
        out = model.forward_kd(torch.randn(2, 3, 32, 32), preact=True)
    assert [f.shape[1] for f in out.features] == channels
    assert [f.shape[2] for f in out.features] == sizes
    assert [f.shape[3] for f in out.features] == sizes
    assert [f.shape for f in out.preact_features] == [f.shape for f in out.features]
    assert out.embedding.shape == (2, emb_dim)
    assert model.feature_channels == channels and model.embedding_dim == emb_dim


def test_vgg_pools_after_block3_at_64x64_like_repdistiller():
    with torch.no_grad():
        out = _model("vgg13").forward_kd(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in out.features] == [64, 32, 16, 8, 4]


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("size", [8, 32])
def test_forward_kd_interface(name, size):
    model = _model(name)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        plain = model.forward_kd(x)
        pre = model.forward_kd(x, preact=True)
        logits = model(x)
    assert isinstance(plain, ModelOutput)
    assert plain.preact_features is None
    for out in (plain, pre):
        assert out.logits.shape == (2, 100)
        assert torch.isfinite(out.logits).all()
        assert len(out.features) == len(model.feature_channels)
        assert [f.shape[1] for f in out.features] == model.feature_channels
        assert out.embedding.shape == (2, model.embedding_dim)
    assert len(pre.preact_features) == len(pre.features)
    assert [f.shape for f in pre.preact_features] == [f.shape for f in pre.features]
    # eval-mode inference is deterministic, and preact does not change the outputs
    assert torch.equal(plain.logits, pre.logits) and torch.equal(plain.logits, logits)
    for a, b in zip(plain.features, pre.features):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("hw", [(9, 13), (64, 8)])
def test_odd_and_non_square_inputs(name, hw):
    with torch.no_grad():
        out = _model(name).forward_kd(torch.randn(1, 3, *hw), preact=True)
    assert out.logits.shape == (1, 100) and torch.isfinite(out.logits).all()
    assert [f.shape[1] for f in out.features] == _model(name).feature_channels


@pytest.mark.parametrize("name", ["resnet8", "ResNet50", "vgg8", "ShuffleV1", "ShuffleV2"])
def test_preact_features_are_taken_before_the_relu(name):
    with torch.no_grad():
        out = _model(name).forward_kd(torch.randn(2, 3, 32, 32), preact=True)
    assert torch.equal(out.preact_features[0], out.features[0])  # stem output, as in RepDistiller
    for f, p in zip(out.features[1:], out.preact_features[1:]):
        assert f.min() >= 0 and p.min() < 0


def test_wrn_preact_is_the_bn_before_the_next_relu():
    model = _model("wrn_16_1")
    with torch.no_grad():
        out = model.forward_kd(torch.randn(2, 3, 32, 32), preact=True)
        expected = [model.block2.layer[0].bn1(out.features[1]), model.block3.layer[0].bn1(out.features[2]),
                    model.bn1(out.features[3])]
    for p, e in zip(out.preact_features[1:], expected):
        torch.testing.assert_close(p, e)


def test_wrn_preact_updates_each_bn_once_in_train_mode():
    # The declared deviation (wrn.py docstring): RepDistiller / mdistiller re-apply the three preact BNs, so
    # in train mode their running statistics move twice per step; here asking for preact changes nothing.
    torch.manual_seed(0)
    a = create_model("wrn_16_1", num_classes=100).train()
    b = create_model("wrn_16_1", num_classes=100).train()
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 3, 32, 32)
    out_a = a.forward_kd(x)
    out_b = b.forward_kd(x, preact=True)
    torch.testing.assert_close(out_a.logits, out_b.logits, rtol=0, atol=0)
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert all(int(bn.num_batches_tracked) == 1 for bn in b.preact_bns())


def _init_rule(name: str) -> tuple[str, str]:
    """RepDistiller's initialisation per model file: (conv rule, linear rule), read off its model code."""
    if name.startswith(("vgg", "MobileNetV2")):
        return "he_fan_out", "normal_0.01_zero_bias"
    if name.startswith("wrn"):
        return "he_fan_out", "default_weight_zero_bias"
    if name.startswith("Shuffle"):
        return "default", "default"  # ShuffleNetv1.py / ShuffleNetv2.py never re-initialise
    return "he_fan_out", "default"  # resnet.py, resnetv2.py (kaiming_normal_ fan_out; Linear untouched)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_initialisation_follows_repdistiller(name):
    conv_rule, linear_rule = _init_rule(name)
    model = _model(name)
    normalised = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            w = m.weight.detach()
            fan_in = w[0].numel()
            if conv_rule == "he_fan_out":
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                normalised.append((w / (2.0 / fan_out) ** 0.5).flatten())
            else:  # PyTorch's default: kaiming_uniform_(a=sqrt(5)), bound 1/sqrt(fan_in), std bound/sqrt(3)
                assert w.abs().max() <= fan_in ** -0.5
                normalised.append((w * (3 * fan_in) ** 0.5).flatten())
            if m.bias is not None:
                assert torch.equal(m.bias, torch.zeros_like(m.bias))
        elif isinstance(m, torch.nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))
        elif isinstance(m, torch.nn.Linear):
            w, b, bound = m.weight.detach(), m.bias.detach(), m.in_features ** -0.5
            if linear_rule == "normal_0.01_zero_bias":
                assert abs(float(w.std()) - 0.01) < 0.0005  # default would be bound / sqrt(3) >= 0.016
            else:
                assert w.abs().max() <= bound and abs(float(w.std()) * 3 ** 0.5 / bound - 1) < 0.05
            if linear_rule == "default":
                assert b.abs().max() <= bound and (b != 0).all()
            else:
                assert torch.equal(b, torch.zeros_like(b))
    pooled = torch.cat(normalised)
    assert abs(float(pooled.std()) - 1) < 0.02 and abs(float(pooled.mean())) < 0.02


def test_num_classes_and_train_mode():
    model = create_model("resnet8", num_classes=10).train()
    out = model.forward_kd(torch.randn(4, 3, 32, 32), preact=True)
    assert out.logits.shape == (4, 10)
    out.logits.sum().backward()
    assert model.conv1.weight.grad is not None


def test_state_dict_keys_follow_repdistiller():
    expected = {
        "resnet8x4": ["conv1.weight", "layer1.0.downsample.0.weight", "layer3.0.bn2.running_var", "fc.bias"],
        "wrn_40_2": ["block1.layer.0.convShortcut.weight", "block3.layer.5.conv2.weight", "bn1.weight", "fc.weight"],
        "vgg13": ["block0.0.bias", "block0.4.running_mean", "block4.3.weight", "classifier.weight"],
        "ResNet50": ["layer1.0.shortcut.1.weight", "layer4.2.bn3.bias", "linear.weight"],
        "MobileNetV2": ["conv1.0.weight", "blocks.6.0.conv.7.running_var", "conv2.1.weight", "classifier.0.bias"],
        "ShuffleV1": ["layer1.0.conv1.weight", "layer3.3.bn3.bias", "linear.weight"],
        "ShuffleV2": ["layer1.0.conv5.weight", "layer2.7.bn3.weight", "conv2.weight", "bn2.bias", "linear.bias"],
    }
    for name, keys in expected.items():
        sd = _model(name).state_dict()
        assert all(k in sd for k in keys), (name, [k for k in keys if k not in sd])


def test_unknown_model_lists_known_models():
    with pytest.raises(UnknownModelError) as err:
        create_model("nope")
    assert isinstance(err.value, KeyError)
    msg = str(err.value)
    assert "nope" in msg and "resnet8x4" in msg and "ShuffleV2" in msg


def _tiny_timm_name() -> str:
    timm = pytest.importorskip("timm")
    for name in ("test_resnet", "resnet10t"):
        if timm.list_models(name):
            return name
    pytest.skip("no tiny timm model available")


@pytest.mark.parametrize("use_hooks", [False, True])
def test_timm_wrapper(use_hooks):
    name = _tiny_timm_name()
    torch.manual_seed(0)
    model = create_model(f"timm:{name}", num_classes=10, use_hooks=use_hooks).eval()
    assert isinstance(model, KDModel)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model.forward_kd(x, preact=True)
        reference = model.model(x)
        plain = model.forward_kd(x)
    assert out.logits.shape == (2, 10)
    torch.testing.assert_close(out.logits, reference)
    assert len(out.features) == len(model.feature_channels) >= 2
    assert [f.shape[1] for f in out.features] == model.feature_channels
    assert all(f.dim() == 4 for f in out.features)
    assert out.embedding.shape == (2, model.embedding_dim)
    assert len(out.preact_features) == len(out.features) and plain.preact_features is None


def test_timm_hook_path_matches_forward_intermediates():
    name = _tiny_timm_name()
    a = create_model(f"timm:{name}", num_classes=10).eval()
    b = create_model(f"timm:{name}", num_classes=10, use_hooks=True).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        oa, ob = a.forward_kd(x), b.forward_kd(x)
    assert len(oa.features) == len(ob.features)
    for fa, fb in zip(oa.features, ob.features):
        torch.testing.assert_close(fa, fb)
    torch.testing.assert_close(oa.embedding, ob.embedding)
