"""Checks shared by the tests of both ONNX exporters and runners (tests/integration/test_onnx_export.py, Optimum on
the 4.57 line; tests/integration/test_onnx_any_line.py, torch.onnx and the package's runner on either line)."""

import torch


def assert_scores_agree_within_1e4(model, ort_model, batch, steps: int):
    """The PyTorch and ONNX Runtime models' scores at each of `steps` generated tokens: the same non-finite entries,
    the rest within 1e-4."""
    kwargs = {"max_new_tokens": steps, "min_new_tokens": steps, "output_scores": True, "return_dict_in_generate": True}
    torch_scores = model.generate(**batch, **kwargs).scores
    ort_scores = ort_model.generate(**batch, **kwargs).scores
    assert len(torch_scores) == len(ort_scores) == steps
    for expected, actual in zip(torch_scores, ort_scores):
        finite = torch.isfinite(expected)
        assert torch.equal(finite, torch.isfinite(actual))
        assert (expected[finite] - actual[finite]).abs().max() < 1e-4


def save_small_preset_periphery_model(tokenizer, processor, folder):
    """A default-initialised tiny model (logits of order 1) with the `small` preset's periphery: batch-norm stages and
    the edge stem with a residual block, whose zero-initialised last norm gets a weight; saved with `processor`."""
    from .conftest import build_tiny_model

    model = build_tiny_model(tokenizer, initializer_range=0.02, stem_norm_type="batch", edge_compensation_type="stem",
                             edge_stem_residual_blocks=1, edge_stem_width_ratio=1.0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model

