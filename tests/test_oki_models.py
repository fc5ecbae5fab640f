"""The seed paper's networks (kdcore/models/oki.py): parameter counts from the authors' layer
definitions, feature shapes at 32x32 and the digits' sizes, the authors' forward pass, resnet34's
ImageNet weights."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdcore.models import create_model
from kdcore.models.oki import ImageNetWeightsMissing


def conv(cin, cout, k=3, bias=True):
    return cin * cout * k * k + (cout if bias else 0)


def bn(c):
    return 2 * c  # weight + bias (running stats are buffers)


def linear(cin, cout):
    return cin * cout + cout


OKI_MODELS = ["oki2020_teacher", "oki2020_student", "oki2022_net", "tv_resnet34", "tv_resnet34_imagenet"]


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# counts written from the authors' layer definitions (network.py at 2c13e23; utils/networks.py)
AUTHORS_COUNTS = {
    "oki2020_teacher": (conv(3, 32) + conv(32, 32) + conv(32, 64) + conv(64, 64) + conv(64, 128)
                        + bn(32) + bn(32) + bn(64) + bn(64) + bn(128)
                        + linear(128 * 4 * 4, 512) + linear(512, 128) + linear(128, 10)),
    "oki2020_student": conv(3, 32) + conv(32, 32) + conv(32, 64) + linear(64 * 4 * 4, 128) + linear(128, 10),
    "oki2022_net": (conv(3, 16) + bn(16) + conv(16, 32) + bn(32) + conv(32, 64) + bn(64)
                    + linear(64 * 4 * 4, 128) + linear(128, 10)),
}


def resnet34_count(classes):
    """torchvision resnet34: 7x7 stem (no bias) + BN, BasicBlocks [3, 4, 6, 3] at 64/128/256/512, fc."""
    total = conv(3, 64, 7, bias=False) + bn(64)
    cin = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for b in range(blocks):
            total += conv(cin, width, bias=False) + bn(width) + conv(width, width, bias=False) + bn(width)
            if cin != width:  # the first block of layers 2-4: 1x1 stride-2 projection + BN
                total += conv(cin, width, 1, bias=False) + bn(width)
            cin = width
    return total + linear(512, classes)


def test_parameter_counts_match_the_authors_definitions():
    assert AUTHORS_COUNTS == {"oki2020_teacher": 1_256_106, "oki2020_student": 161_130, "oki2022_net": 156_298}
    for name, count in AUTHORS_COUNTS.items():
        assert n_params(create_model(name, num_classes=10)) == count, name
    assert n_params(create_model("oki2022_net", num_classes=100)) == AUTHORS_COUNTS["oki2022_net"] + 90 * 129
    assert resnet34_count(1000) == 21_797_672  # torchvision's documented resnet34 size
    assert n_params(create_model("tv_resnet34", num_classes=10)) == resnet34_count(10) == 21_289_802


SHAPES = {  # (features C,H,W ..., embedding dim) at 32x32 / 8x8 (digits) / 16x16 / 28x28 (MNIST)
    "oki2020_teacher": {32: [(32, 16, 16), (32, 8, 8), (64, 8, 8), (64, 8, 8), (128, 4, 4)],
                        8: [(32, 4, 4), (32, 2, 2), (64, 2, 2), (64, 2, 2), (128, 1, 1)],
                        16: [(32, 8, 8), (32, 4, 4), (64, 4, 4), (64, 4, 4), (128, 2, 2)],
                        28: [(32, 14, 14), (32, 7, 7), (64, 7, 7), (64, 7, 7), (128, 3, 3)]},
    "oki2020_student": {32: [(32, 16, 16), (32, 8, 8), (64, 4, 4)], 8: [(32, 4, 4), (32, 2, 2), (64, 1, 1)],
                        16: [(32, 8, 8), (32, 4, 4), (64, 2, 2)], 28: [(32, 14, 14), (32, 7, 7), (64, 3, 3)]},
    "oki2022_net": {32: [(16, 16, 16), (32, 8, 8), (64, 4, 4)], 8: [(16, 4, 4), (32, 2, 2), (64, 1, 1)],
                    16: [(16, 8, 8), (32, 4, 4), (64, 2, 2)], 28: [(16, 14, 14), (32, 7, 7), (64, 3, 3)]},
    "tv_resnet34": {32: [(64, 16, 16), (64, 8, 8), (128, 4, 4), (256, 2, 2), (512, 1, 1)],
                    8: [(64, 4, 4), (64, 2, 2), (128, 1, 1), (256, 1, 1), (512, 1, 1)],
                    16: [(64, 8, 8), (64, 4, 4), (128, 2, 2), (256, 1, 1), (512, 1, 1)],
                    28: [(64, 14, 14), (64, 7, 7), (128, 4, 4), (256, 2, 2), (512, 1, 1)]},
}


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("size", [32, 8, 16, 28])
def test_feature_shapes(name, size):
    m = create_model(name, num_classes=10).eval()
    out = m.forward_kd(torch.randn(2, 3, size, size), preact=True)
    assert [tuple(f.shape[1:]) for f in out.features] == SHAPES[name][size]
    assert [tuple(f.shape[1:]) for f in out.preact_features] == SHAPES[name][size]
    assert m.feature_channels == [s[0] for s in SHAPES[name][size]]
    assert out.embedding.shape == (2, m.embedding_dim) and out.logits.shape == (2, 10)
    assert m.forward_kd(torch.randn(2, 3, size, size)).preact_features is None
    # post-activation maps are the ReLU of the pre-activation ones (none for the 2020 teacher's BN-ended blocks)
    for f, p in zip(out.features, out.preact_features):
        assert torch.equal(f, p if name == "oki2020_teacher" else F.relu(p))


def _authors_teacher_2020(m, x):
    """network.py Net_teacher.forward, written from the authors' text, on our module's weights."""
    x = m.pool(m.batchnorm1(F.relu(m.conv1(x))))
    x = m.pool(m.batchnorm2(F.relu(m.conv2(x))))
    x = m.batchnorm3(F.relu(m.conv3(x)))
    x = m.batchnorm4(F.relu(m.conv4(x)))
    x = m.pool(m.batchnorm5(F.relu(m.conv5(x))))
    x = x.view(-1, 128 * 4 * 4)
    x = m.dropout(F.relu(m.fc1(x)))
    x = m.dropout(F.relu(m.fc2(x)))
    return m.fc3(x)


def _authors_student_2020(m, x):
    x = m.pool(F.relu(m.conv1(x)))
    x = m.pool(F.relu(m.conv2(x)))
    x = m.pool(F.relu(m.conv3(x)))
    return m.fc2(F.relu(m.fc1(x.view(-1, 64 * 4 * 4))))


def _authors_net_2022(m, x):
    return m.classifier(torch.flatten(m.avgpool(m.features(x)), 1))


@pytest.mark.parametrize("name, reference", [("oki2020_teacher", _authors_teacher_2020),
                                             ("oki2020_student", _authors_student_2020),
                                             ("oki2022_net", _authors_net_2022)])
def test_forward_is_the_authors_function_at_32x32(name, reference):
    torch.manual_seed(0)
    m = create_model(name, num_classes=10)
    x = torch.rand(4, 3, 32, 32)
    m.train()  # BN batch statistics (and the teacher's dropout masks, replayed from one seed)
    torch.manual_seed(1)
    ours = m(x)
    torch.manual_seed(1)
    assert torch.allclose(ours, reference(m, x), atol=1e-6)
    m.eval()
    assert torch.allclose(m(x), reference(m, x), atol=1e-6)


def test_state_dict_keys_are_the_authors():
    t = create_model("oki2020_teacher", num_classes=10).state_dict()
    assert {k.split(".")[0] for k in t} == {f"conv{i}" for i in range(1, 6)} | {f"batchnorm{i}" for i in range(1, 6)} \
        | {"fc1", "fc2", "fc3"}
    s = create_model("oki2020_student", num_classes=10).state_dict()
    assert set(s) == {f"{m}.{p}" for m in ("conv1", "conv2", "conv3", "fc1", "fc2") for p in ("weight", "bias")}
    n = create_model("oki2022_net", num_classes=10).state_dict()
    assert {k for k in n if k.endswith("weight")} == {"features.0.weight", "features.1.weight", "features.4.weight",
                                                      "features.5.weight", "features.8.weight", "features.9.weight",
                                                      "classifier.0.weight", "classifier.2.weight"}


def test_resnet34_is_torchvisions():
    from torchvision.models import resnet34

    ours = create_model("tv_resnet34", num_classes=10).eval()
    theirs = resnet34(weights=None, num_classes=10).eval()
    assert set(ours.state_dict()) == set(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())  # torchvision's own files load as they are
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(ours(x), theirs(x), atol=1e-5)


def test_resnet34_imagenet_weights_file(tmp_path, monkeypatch, capsys):
    from torchvision.models import resnet34

    torch.manual_seed(0)
    imagenet = resnet34(weights=None, num_classes=1000).state_dict()  # stands in for resnet34-b627a593.pth
    path = tmp_path / "resnet34-b627a593.pth"
    torch.save(imagenet, path)
    monkeypatch.setenv("KDBENCH_RESNET34_WEIGHTS", str(path))
    m = create_model("tv_resnet34_imagenet", num_classes=10)
    own = m.state_dict()
    assert all(torch.equal(own[k], v) for k, v in imagenet.items() if not k.startswith("fc."))
    assert own["fc.weight"].shape == (10, 512)
    err = capsys.readouterr().err
    assert "ImageNet weights from" in err and "1000-class fc layer is dropped" in err
    monkeypatch.setenv("KDBENCH_RESNET34_WEIGHTS", str(tmp_path / "absent.pth"))
    with pytest.raises(ImageNetWeightsMissing, match="nothing is downloaded here.*KDBENCH_RESNET34_WEIGHTS"):
        create_model("tv_resnet34_imagenet", num_classes=10)


def test_resnet34_from_scratch_says_so(capsys):
    import kdcore.models.oki as oki

    oki._said.discard("scratch")
    create_model("tv_resnet34", num_classes=10)
    create_model("tv_resnet34", num_classes=10)
    err = capsys.readouterr().err
    assert err.count("from scratch") == 1 and "ImageNet" in err  # one line, once per process


@pytest.mark.parametrize("name", ["oki2020_teacher", "oki2020_student", "oki2022_net", "tv_resnet34"])
@pytest.mark.parametrize("hw", [(9, 13), (64, 8), (32, 32)])
def test_uniform_interface(name, hw):
    """The zoo's contract (tests/test_models.py's checks) on the new networks, odd sizes included."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=100).eval()
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        plain, pre, logits = model.forward_kd(x), model.forward_kd(x, preact=True), model(x)
    assert plain.preact_features is None and len(pre.preact_features) == len(pre.features)
    for out in (plain, pre):
        assert out.logits.shape == (2, 100) and torch.isfinite(out.logits).all()
        assert [f.shape[1] for f in out.features] == model.feature_channels
        assert out.embedding.shape == (2, model.embedding_dim)
    assert torch.equal(plain.logits, pre.logits) and torch.equal(plain.logits, logits)
    assert all(torch.equal(a, b) for a, b in zip(plain.features, pre.features))
