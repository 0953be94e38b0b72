"""Model sampling tables and maps against ComfyUI's own tables (golden/sigmas.json.gz)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import golden_sigmas

import jax_unsampler as ju

FAMILIES = golden_sigmas()["families"]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_table_matches_comfyui(family):
    record = FAMILIES[family]
    ms = ju.model_sampling(record["model_type"], record["sampling_settings"])
    table = np.asarray(record["sigma_table"], np.float64)
    sigmas = np.asarray(ms.sigmas, np.float64)
    chex.assert_shape(ms.sigmas, table.shape)
    assert ms.sigmas.dtype == jnp.float32
    # Same bar as the schedules: ComfyUI's float32 formula is itself this noisy where it cancels.
    np.testing.assert_allclose(sigmas, table, rtol=1e-5, atol=1e-6 * table[-1])
    np.testing.assert_allclose(float(ms.sigma_min), record["sigma_min"], rtol=1e-5)
    np.testing.assert_allclose(float(ms.sigma_max), record["sigma_max"], rtol=1e-5)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_preset_matches_golden_family(family):
    record = FAMILIES[family]
    p = ju.preset(family)
    assert p.model_type == record["model_type"]
    assert p.sampling_settings == record["sampling_settings"]
    assert p.latent_scale_factor == record["latent_scale_factor"]
    assert p.latent_channels == record["latent_channels"]
    assert p.latent_dimensions == record["latent_dimensions"]
    fmt = record["latent_format"]
    assert p.latent_format.scale_factor == fmt["scale_factor"]
    assert p.latent_format.shift_factor == (fmt["shift_factor"] or 0.0)
    table = np.asarray(record["sigma_table"])
    np.testing.assert_allclose(np.asarray(p.model_sampling.sigmas), table, rtol=1e-5, atol=1e-6 * table[-1])


# ComfyUI's flow, Flux and shifted Stable Cascade maps are deliberately not inverses: the
# timestep ignores the shift. Only the others round-trip.
INVERTIBLE = [f for f, r in FAMILIES.items() if r["model_type"] not in ("FLOW", "FLUX", "STABLE_CASCADE")]


@pytest.mark.parametrize("family", INVERTIBLE + ["flux-schnell"])
def test_sigma_timestep_round_trip(family):
    """sigma(timestep(s)) returns each table entry (to float32 accuracy of the map)."""
    ms = ju.preset(family).model_sampling
    picks = ms.sigmas[:: max(ms.sigmas.shape[0] // 50, 1)]
    back = np.asarray(ms.sigma(ms.timestep(picks)))
    np.testing.assert_allclose(back, np.asarray(picks), rtol=2e-3, atol=1e-4 * float(ms.sigma_max))


def test_model_sampling_is_a_pytree_with_static_names():
    ms = ju.model_sampling("FLOW", {"shift": 3.0})
    leaves, treedef = jax.tree_util.tree_flatten(ms)
    assert any(leaf.shape == (1000,) for leaf in leaves)
    rebuilt = jax.tree_util.tree_unflatten(treedef, leaves)
    assert rebuilt.model_type == "FLOW"
    assert jax.jit(lambda m: m.sigma_max)(ms) == ms.sigma_max


@pytest.mark.parametrize(
    "settings",
    [
        {"zsnr": True},
        {"beta_schedule": "cosine"},
        {"beta_schedule": "squaredcos_cap_v2"},
        {"beta_schedule": "sqrt", "linear_start": 0.0001, "linear_end": 0.02},
        {"timesteps": 1100, "linear_end": 0.014},
    ],
)
def test_discrete_variants_are_valid_tables(settings):
    ms = ju.model_sampling("EPS", settings)
    table = np.asarray(ms.sigmas)
    assert table.shape == (settings.get("timesteps", 1000),)
    assert np.all(np.isfinite(table)) and np.all(table > 0)
    assert np.all(np.diff(table) > 0)


def test_zsnr_reaches_terminal_snr():
    """Zero-terminal-SNR sets the last alphas_cumprod to 4.897e-08 (sigma ~ 4519)."""
    ms = ju.model_sampling("V_PREDICTION", {"zsnr": True})
    np.testing.assert_allclose(
        float(ms.sigma_max), np.sqrt((1 - 4.8973451890853435e-08) / 4.8973451890853435e-08), rtol=1e-6
    )
    plain = ju.model_sampling("V_PREDICTION")
    np.testing.assert_allclose(float(ms.sigma_min), float(plain.sigma_min), rtol=1e-3)


def test_settings_not_read_by_a_type_are_ignored_like_comfyui():
    a = ju.model_sampling("EPS", {"shift": 3.0})
    b = ju.model_sampling("EPS")
    np.testing.assert_array_equal(np.asarray(a.sigmas), np.asarray(b.sigmas))


def test_from_table_uses_discrete_maps():
    table = np.asarray(ju.preset("sd15").model_sampling.sigmas)
    ms = ju.model_sampling_from_table(table)
    sd15 = ju.preset("sd15").model_sampling
    got = np.asarray(ju.calculate_sigmas(ms, "normal", 20))
    # The preset's log table comes from float64 sigmas, this one from the float32 table.
    np.testing.assert_allclose(got, np.asarray(ju.calculate_sigmas(sd15, "normal", 20)), rtol=1e-6)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: ju.model_sampling("EPSILON"),
            r"unknown model_type 'EPSILON'.*valid choices: EPS, V_PREDICTION",
        ),
        (lambda: ju.model_sampling("EPS", {"beta_schedule": "scaled"}), r"unknown beta_schedule 'scaled'"),
        (lambda: ju.model_sampling("FLOW", {"shift": -1}), r"shift must be a positive finite number, got -1"),
        (
            lambda: ju.model_sampling("EDM", {"sigma_min": 5, "sigma_max": 1}),
            r"sigma_min must be below sigma_max",
        ),
        (lambda: ju.model_sampling("EPS", {"timesteps": 1.5}), r"timesteps must be an integer >= 2"),
        (lambda: ju.model_sampling("EPS", {"zsnr": "yes"}), r"zsnr must be True or False"),
        (lambda: ju.model_sampling_from_table([[1.0, 2.0]]), r"sigmas must be 1-D"),
        (lambda: ju.model_sampling_from_table([2.0, 1.0]), r"ascending"),
        (lambda: ju.model_sampling_from_table([0.0, 1.0]), r"positive and finite"),
        (lambda: ju.preset("sdxl-turbo-9000"), r"unknown preset 'sdxl-turbo-9000'.*sd15"),
    ],
)
def test_bad_settings_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_unknown_settings_keys_are_refused_with_the_types_keys():
    with pytest.raises(
        ValueError,
        match=r"unknown sampling_settings key 'shfit' \(did you mean 'shift'\?\); FLOW reads shift, "
        r"multiplier",
    ):
        ju.model_sampling("FLOW", {"shfit": 2.0})


@pytest.mark.parametrize("model_type", ["EPS", "V_PREDICTION", "FLOW", "FLUX", "STABLE_CASCADE"])
def test_sigma_data_is_one_where_comfyui_ignores_the_setting(model_type):
    # ComfyUI reads sigma_data only in its continuous samplings (EDM, V continuous, Cosmos).
    assert float(ju.model_sampling(model_type, {"sigma_data": 0.5}).sigma_data) == 1.0


@pytest.mark.parametrize("model_type", ["EDM", "V_PREDICTION_EDM", "V_PREDICTION_CONTINUOUS", "FLOW_COSMOS"])
def test_sigma_data_is_read_by_the_continuous_samplings(model_type):
    assert float(ju.model_sampling(model_type, {"sigma_data": 0.5}).sigma_data) == 0.5
