"""Reading ComfyUI MODELs: model sampling, latent scale factor and latent format."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_bridge_doubles as doubles
from conftest import golden_sigmas

import jax_unsampler as ju
import torch_bridge as tb

FAMILIES = list(golden_sigmas()["families"])


def _golden_schedules(family, schedulers, steps_rank=3):
    rows = [r for r in golden_sigmas()["schedules"] if r["family"] == family and r["sampler"] == "euler"]
    steps = sorted({r["steps"] for r in rows})[steps_rank]
    return [r for r in rows if r["scheduler"] in schedulers and r["steps"] == steps]


def _assert_schedule(ms, row, sigma_max):
    got = np.asarray(ju.ksampler_sigmas(ms, row["sampler"], row["scheduler"], row["steps"]))
    want = np.asarray(row["sigmas"], np.float64)
    assert got.shape == want.shape, (row["family"], row["scheduler"])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * sigma_max, err_msg=str(row))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_gives_comfyuis_schedules(family):
    fam = golden_sigmas()["families"][family]
    ms = tb.model_sampling_from_comfy(doubles.patcher(family))
    assert ms.model_type == fam["model_type"]
    # sgm_uniform and normal go through the sigma/timestep maps; karras reads only the table.
    for row in _golden_schedules(family, ("sgm_uniform", "normal", "karras")):
        _assert_schedule(ms, row, fam["sigma_max"])


def test_old_style_and_bare_models_and_the_sampling_object_itself():
    fam = golden_sigmas()["families"]["sd3"]
    base = doubles.BaseModel("sd3")
    for model in (doubles.OldModelPatcher(base), base, base.model_sampling, doubles.ModelPatcher(base)):
        ms = tb.model_sampling_from_comfy(model)
        assert ms.model_type == "FLOW"
        assert float(ms.shift) == 3.0 and float(ms.multiplier) == 1000.0
        np.testing.assert_array_equal(np.asarray(ms.sigmas), np.asarray(fam["sigma_table"], np.float32))
        assert tb.latent_scale_factor(model if model is not base.model_sampling else base) == 1.5305


def test_current_patcher_is_read_through_get_model_object_and_honours_patches():
    patcher = doubles.patcher("sd15")
    patcher.add_object_patch("model_sampling", doubles.model_sampling("flux-dev"))
    ms = tb.model_sampling_from_comfy(patcher)
    assert ms.model_type == "FLUX"
    assert "model_sampling" in patcher.get_model_object_calls
    for row in _golden_schedules("flux-dev", ("sgm_uniform",)):
        _assert_schedule(ms, row, 1.0)


@pytest.mark.parametrize("family", ["sd2-v", "svd", "stable-audio", "cosmos-predict2", "auraflow"])
def test_model_type_comes_from_the_mixin_or_the_class(family):
    with_mixin = tb.model_sampling_from_comfy(doubles.model_sampling(family))
    assert with_mixin.model_type == golden_sigmas()["families"][family]["model_type"]
    bare = tb.model_sampling_from_comfy(doubles.model_sampling(family, with_mixin=False))
    expected = {"sd2-v": "EPS", "svd": "EDM", "stable-audio": "V_PREDICTION_CONTINUOUS"}
    assert bare.model_type == expected.get(family, with_mixin.model_type)


def test_unknown_sampling_class_falls_back_to_the_discrete_table():
    class ModelSamplingDiscreteDistilled(doubles.ModelSamplingDiscrete):  # LCM's: its own maps
        sigma = timestep = doubles._never

    table = golden_sigmas()["families"]["sd15"]["sigma_table"]
    obj = type("ModelSamplingAdvanced", (ModelSamplingDiscreteDistilled, doubles.EPS), {})(table, {})
    ms = tb.model_sampling_from_comfy(obj)
    assert ms.model_type == "EPS"
    for row in _golden_schedules("sd15", ("karras", "normal", "simple")):
        _assert_schedule(ms, row, 14.6146)

    class WeirdFlow(torch.nn.Module, doubles.CONST):
        def __init__(self):
            super().__init__()
            self.register_buffer("sigmas", torch.linspace(0.001, 1.0, 1000))

        sigma = timestep = doubles._never

    assert tb.model_sampling_from_comfy(WeirdFlow()).model_type == "FLOW"  # CONST noise scaling


def test_models_it_cannot_read_raise_clear_errors():
    with pytest.raises(ValueError, match="model_sampling_from_comfy: got None; expected a ComfyUI MODEL"):
        tb.model_sampling_from_comfy(None)
    with pytest.raises(ValueError, match="cannot find a model_sampling in a str; expected a ComfyUI MODEL"):
        tb.model_sampling_from_comfy("sd15")

    class Broken:
        def get_model_object(self, name):
            raise AttributeError(name)

    with pytest.raises(ValueError, match="cannot find a model_sampling in a Broken"):
        tb.model_sampling_from_comfy(Broken())
    with pytest.raises(ValueError, match="cannot find a latent_format in a Broken"):
        tb.latent_scale_factor(Broken())

    class NoTable:
        model_sampling = object()

    with pytest.raises(ValueError, match="the model sampling object \\(object\\) has no 'sigmas' table"):
        tb.model_sampling_from_comfy(NoTable())

    class Descending:
        sigmas = torch.linspace(10, 1, 5)

    with pytest.raises(ValueError, match="Descending has an unusable sigma table: .*ascending"):
        tb.model_sampling_from_comfy(Descending())


@pytest.mark.parametrize("family", ["sd15", "sdxl", "flux-dev", "wan21", "playground-2.5", "stable-audio"])
def test_latent_scale_factor_and_format(family):
    record = golden_sigmas()["families"][family]["latent_format"]
    patcher = doubles.patcher(family)
    assert tb.latent_scale_factor(patcher) == record["scale_factor"]
    assert tb.latent_scale_factor(doubles.OldModelPatcher(patcher.model)) == record["scale_factor"]
    lf = tb.latent_format_from_comfy(patcher)
    assert lf.name == record["class"]
    assert lf.scale_factor == record["scale_factor"]
    assert lf.shift_factor == (record.get("shift_factor") or 0.0)
    if record.get("latents_mean") is None:
        assert lf.latents_mean is None and lf.latents_std is None
    else:
        np.testing.assert_allclose(lf.latents_mean, record["latents_mean"], rtol=1e-7)
        np.testing.assert_allclose(lf.latents_std, record["latents_std"], rtol=1e-7)
    hash(lf)  # usable as a static jit argument
