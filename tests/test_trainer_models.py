"""The trainer's torch models: shapes, masking of missing sites, the hypernetwork, ONNX export."""

from __future__ import annotations

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]'); model tests need it")

from trainer.hypernet import DynamicLinear  # noqa: E402
from trainer.model import METADATA_PATHS, ModelConfig, ScreeningModel, parameter_count  # noqa: E402
from trainer.murmur_head import focal_loss, multi_head_murmur_loss  # noqa: E402

N_FREQ, N_FRAMES = 48, 64


def inputs(batch: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 5, N_FREQ, N_FRAMES, generator=g)
    mask = torch.tensor([[1, 1, 0, 1, 0], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1]], dtype=torch.float32)[:batch]
    metadata = torch.randn(batch, 15, generator=g)
    return x, mask, metadata


def model(task: str, path: str) -> ScreeningModel:
    torch.manual_seed(0)
    return ScreeningModel(ModelConfig(task=task, metadata_path=path, n_frames=N_FRAMES)).eval()


CASES = [(task, path) for task in ("outcome", "murmur") for path in METADATA_PATHS]


@pytest.mark.parametrize("task, path", CASES)
def test_outputs_have_the_contract_shapes_and_ranges(task, path):
    outputs = model(task, path)(*inputs())
    assert outputs[0].shape == (3,) and outputs[1].shape == (3,) and outputs[2].shape == (3, 5)
    assert torch.all((outputs[0] > 0) & (outputs[0] < 1))
    assert torch.allclose(torch.sigmoid(outputs[1]), outputs[0], atol=1e-5)
    assert torch.allclose(outputs[2].sum(dim=1), torch.ones(3), atol=1e-5)
    if task == "murmur":
        assert outputs[3].shape == (3, 3)
        assert torch.allclose(outputs[3].sum(dim=1), torch.ones(3), atol=1e-5)
        assert torch.allclose(outputs[0], outputs[3][:, 0] + outputs[3][:, 1], atol=1e-5)


@pytest.mark.parametrize("task, path", CASES)
def test_a_missing_site_does_not_influence_the_result(task, path):
    m = model(task, path)
    x, mask, metadata = inputs()
    changed = x.clone()
    changed[mask == 0] = torch.randn_like(changed[mask == 0]) * 100.0  # garbage, even NaN-free extremes
    changed[0, 2] = float("nan")
    with torch.no_grad():
        reference, perturbed = m(x, mask, metadata), m(changed, mask, metadata)
    for a, b in zip(reference, perturbed):
        assert torch.allclose(a, b, atol=1e-6)
    assert torch.all(reference[2][mask == 0] == 0)


def test_a_patient_is_scored_the_same_alone_or_in_a_batch():
    m = model("outcome", "hyper")
    x, mask, metadata = inputs()
    with torch.no_grad():
        together = m(x, mask, metadata)[1]
        alone = torch.cat([m(x[i : i + 1], mask[i : i + 1], metadata[i : i + 1])[1] for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("path", ["mlp", "hyper", "hyperfusion"])
def test_metadata_changes_the_output_only_for_metadata_models(path):
    x, mask, metadata = inputs()
    for p, should_change in ((path, True), ("primary", False)):
        m = model("outcome", p)
        if should_change:  # train-like state: give the generated/embedded path some weight
            for name, parameter in m.named_parameters():
                if "generator" in name or "metadata_mlp" in name or (p == "mlp" and name.startswith("final")):
                    parameter.data.normal_(0, 0.5)
        with torch.no_grad():
            a, b = m(x, mask, metadata)[1], m(x, mask, metadata + 1.0)[1]
        assert (not torch.allclose(a, b, atol=1e-6)) == should_change


def test_dynamic_linear_is_a_static_layer_plus_a_small_generated_delta():
    torch.manual_seed(0)
    layer = DynamicLinear(64, 8, metadata_dim=15, hidden=16, dropout=0.0, delta_scale=0.1).eval()
    x, metadata = torch.randn(256, 64), torch.randn(256, 15)
    dynamic, static = layer(x, metadata), layer.static(x)
    relative = (dynamic - static).std() / static.std()
    assert 0.01 < float(relative) < 0.5  # present but small at initialisation
    # rows are independent: one patient's layer is its own
    assert torch.allclose(layer(x[:1], metadata[:1]), dynamic[:1], atol=1e-6)
    # with K rows per patient (e.g. sites) the same patient layer applies to each row
    rows = layer(x[:6].reshape(2, 3, 64), metadata[:2])
    assert torch.allclose(rows[1, 2], layer(x[5:6], metadata[1:2])[0], atol=1e-5)


@pytest.mark.parametrize("task, path", CASES)
def test_default_models_stay_under_one_million_parameters(task, path):
    assert parameter_count(model(task, path)) <= 1_000_000


def test_focal_loss_with_label_smoothing_is_lowest_for_the_true_class_and_never_zero():
    target = torch.tensor([0, 1, 2])
    right = torch.eye(3) * 10.0
    wrong = torch.roll(torch.eye(3), 1, dims=1) * 10.0
    assert focal_loss(right, target) < focal_loss(wrong, target)
    assert focal_loss(right, target) > 0  # smoothing keeps a floor
    # heads that disagree pay a distillation price on top of the supervised loss
    agree = right.unsqueeze(1).repeat(1, 3, 1)
    disagree = torch.stack([right, wrong, right], dim=1)
    assert multi_head_murmur_loss(disagree, target) > multi_head_murmur_loss(agree, target)


@pytest.mark.parametrize("task, path", CASES)
def test_every_model_exports_to_onnx_and_matches_torch(task, path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is needed to run the exported graph")
    m = model(task, path)
    config = m.config
    buffer = io.BytesIO()
    torch.onnx.export(
        m, inputs(), buffer, dynamo=False, opset_version=17, input_names=["x", "site_mask", "metadata"],
        output_names=list(config.output_names),
        dynamic_axes={name: {0: "batch"} for name in ("x", "site_mask", "metadata", *config.output_names)},
    )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x", "site_mask", "metadata"]
    x, mask, metadata = inputs(batch=2, seed=1)  # another batch size and mask than traced
    mask = torch.tensor([[0, 1, 0, 0, 0], [1, 0, 1, 0, 1]], dtype=torch.float32)
    with torch.no_grad():
        expected = m(x, mask, metadata)
    got = session.run(None, {"x": x.numpy(), "site_mask": mask.numpy(), "metadata": metadata.numpy()})
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b.numpy(), atol=1e-4)
