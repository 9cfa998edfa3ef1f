"""The plain and Monte-Carlo-Dropout predictor, under whichever backend KERAS_BACKEND names."""

from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest

from inference import sampler as sampler_module
from inference.sampler import Predictor

JAX = keras.backend.backend() == "jax"
CLASSIFICATION_KEYS = {"mean", "std", "class", "predictive_entropy", "mutual_information"}


def _x(rows: int, features: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, features)).astype("float32")


def batch_norm_classifier() -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    # moving statistics far from their initial (0, 1), so that batch statistics would show
    bn = model.layers[1]
    rng = np.random.default_rng(1)
    bn.moving_mean.assign(rng.uniform(0.5, 1.5, 16).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, 16).astype("float32"))
    return model


def selu_classifier() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="selu", kernel_initializer="lecun_normal"),
            keras.layers.AlphaDropout(0.2),
            keras.layers.Dense(16, activation="selu", kernel_initializer="lecun_normal"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


def gaussian_dropout_classifier() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.GaussianDropout(0.3),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )


def regressor() -> keras.Model:
    # a linear head after the dropout: the MC mean is the plain prediction in expectation
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(2),
        ]
    )


MODELS: dict[str, tuple[Callable[[], keras.Model], str]] = {
    "batch_norm": (batch_norm_classifier, "classification"),
    "alpha_dropout": (selu_classifier, "classification"),
    "gaussian_dropout": (gaussian_dropout_classifier, "classification"),
    "regression": (regressor, "regression"),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("models")
    paths = {}
    for name, (build, _) in MODELS.items():
        paths[name] = root / f"{name}.keras"
        build().save(paths[name])
    return paths


_loaded: dict[Path, Predictor] = {}


def load(saved: dict[str, Path], name: str, fresh: bool = False) -> Predictor:
    """The stored model's predictor, shared by the tests (compiling is most of their time)."""
    if fresh or saved[name] not in _loaded:
        _loaded[saved[name]] = Predictor.load(saved[name], MODELS[name][1])
    return _loaded[saved[name]]


@pytest.mark.parametrize("name", list(MODELS))
def test_same_seed_same_draws_and_other_seeds_differ(saved: dict[str, Path], name: str) -> None:
    p = load(saved, name)
    X = _x(5)
    a = p.sample(X, 20, seed=1)
    assert a.shape == (20, 5, p.model.outputs[0].shape[-1])
    assert np.array_equal(a, p.sample(X, 20, seed=1))
    assert not np.allclose(a, p.sample(X, 20, seed=2))
    assert not np.allclose(a, p.sample(X, 20, seed=None))
    assert a.std(axis=0).min() > 0  # every row is sampled
    assert np.allclose(p.predict(X), p.model.predict_on_batch(X), atol=1e-6)


@pytest.mark.parametrize("name", list(MODELS))
def test_a_row_alone_and_inside_a_batch(saved: dict[str, Path], name: str) -> None:
    p = load(saved, name)
    X = _x(7)
    if JAX:  # masks are drawn per row: exact up to float rounding
        alone, crowd = p.sample(X[:1], 50, seed=3), p.sample(X, 50, seed=3)
        assert np.abs(alone[:, 0] - crowd[:, 0]).max() < 1e-6
    else:  # one draw for the whole tiled batch: the same distribution only
        alone, crowd = p.sample(X[:1], 3000, seed=3), p.sample(X, 3000, seed=3)
        assert np.abs(alone[:, 0].mean(axis=0) - crowd[:, 0].mean(axis=0)).max() < 0.03


@pytest.mark.skipif(not JAX, reason="per-row keys are the JAX path's")
def test_draws_do_not_depend_on_padding_or_row_chunks(
    saved: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    p = load(saved, "batch_norm")
    X = _x(9)
    whole = p.sample(X, 40, seed=5)
    # N pads to a bucket: the first draws of a row are the same for every N
    assert np.abs(p.sample(X, 25, seed=5) - whole[:25]).max() < 1e-6
    monkeypatch.setattr(sampler_module, "CHUNK_VALUES", 2 * 40 * 16)  # 2 rows per call
    assert np.abs(p.sample(X, 40, seed=5) - whole).max() < 1e-6
    monkeypatch.setattr(sampler_module, "CHUNK_VALUES", 16 * 16)  # 16 samples per call
    split = p.sample(X, 40, seed=5)
    assert np.array_equal(split, p.sample(X, 40, seed=5))
    assert np.abs(p.sample(X[:1], 40, seed=5)[:, 0] - split[:, 0]).max() < 1e-6


def test_chunked_requests_keep_their_shape(
    saved: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    p = load(saved, "regression")
    monkeypatch.setattr(sampler_module, "CHUNK_VALUES", 16 * 8)
    monkeypatch.setattr(sampler_module, "PREDICT_ROWS", 4)
    X = _x(11)
    draws = p.sample(X, 30, seed=0)
    assert draws.shape == (30, 11, 2) and np.isfinite(draws).all()
    assert np.allclose(p.predict(X), p.model.predict_on_batch(X), atol=1e-6)


def test_batch_norm_statistics_never_change(saved: dict[str, Path]) -> None:
    p = load(saved, "batch_norm", fresh=True)
    bn = p.model.layers[1]
    before = [np.array(w) for w in bn.get_weights()]
    X = _x(1)
    p.sample(X, 200, seed=0)
    p.predict_mc(_x(64), 50, seed=None)
    p.predict(X)
    for w, old in zip(bn.get_weights(), before, strict=True):
        assert np.array_equal(w, old)
    # inference mode: a single row's draws depend on the row (batch statistics would not)
    a, b = p.sample(_x(1, seed=1), 100, 0).mean(axis=0), p.sample(_x(1, seed=2), 100, 0).mean(0)
    assert np.abs(a - b).max() > 1e-3


def test_mc_mean_approaches_the_plain_prediction(saved: dict[str, Path]) -> None:
    X = _x(4)
    reg = load(saved, "regression")
    draws = reg.sample(X, 4000, seed=0)
    bound = 5 * draws.std(axis=0) / np.sqrt(len(draws)) + 1e-4  # unbiased: a linear head
    assert (np.abs(draws.mean(axis=0) - reg.predict(X)) < bound).all()
    for name in ("batch_norm", "gaussian_dropout"):  # a softmax head: close, not equal
        p = load(saved, name)
        assert np.abs(p.sample(X, 2000, seed=0).mean(axis=0) - p.predict(X)).max() < 0.1


@pytest.mark.parametrize("rate", [0.25, 0.5])
def test_dropout_layers_draw_the_right_noise(rate: float) -> None:
    x = np.ones((2, 4000), "float32")
    only = keras.Sequential([keras.Input((4000,)), keras.layers.Dropout(rate)])
    d = Predictor(only, "regression").sample(x, 10, seed=0)
    assert abs((d == 0).mean() - rate) < 0.01
    assert np.allclose(d[d != 0], 1 / (1 - rate), rtol=1e-4)

    gauss = keras.Sequential([keras.Input((4000,)), keras.layers.GaussianDropout(rate)])
    g = Predictor(gauss, "regression").sample(x, 10, seed=0)
    assert abs(g.mean() - 1) < 0.02 and abs(g.std() - np.sqrt(rate / (1 - rate))) < 0.02

    z = np.random.default_rng(0).normal(size=(2, 4000)).astype("float32")
    alpha = keras.Sequential([keras.Input((4000,)), keras.layers.AlphaDropout(rate)])
    a = Predictor(alpha, "regression").sample(z, 10, seed=0)
    assert abs(a.mean()) < 0.03 and abs(a.std() - 1) < 0.03  # SELU's fixed point kept
    alpha_p = -1.6732632423543772 * 1.0507009873554805
    scale = ((1 - rate) * (1 + rate * alpha_p**2)) ** -0.5
    dropped = scale * alpha_p * (1 - rate)  # where a dropped value lands
    assert abs(np.isclose(a, dropped, atol=1e-5).mean() - rate) < 0.01


def test_gaussian_noise_is_not_sampled() -> None:
    noise_only = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(4), keras.layers.GaussianNoise(1.0)]
    )
    p = Predictor(noise_only, "regression")
    assert p.sampler is None
    with pytest.raises(ValueError, match="dropout"):
        p.sample(_x(2, 4), 10, seed=0)
    # inside the sampled tail it stays off: dropped zeros stay zeros
    tail = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dropout(0.5), keras.layers.GaussianNoise(1.0)]
    )
    assert not Predictor(tail, "regression").sample(np.zeros((3, 4), "float32"), 20, 0).any()


def test_predict_mc_answers(saved: dict[str, Path]) -> None:
    X = _x(3)
    rows = load(saved, "batch_norm").predict_mc(X, 30, seed=0, return_samples=True)
    assert len(rows) == 3 and set(rows[0]) == CLASSIFICATION_KEYS | {"samples"}
    assert np.asarray(rows[0]["samples"]).shape == (30, 4)
    assert np.isclose(sum(rows[0]["mean"]), 1, atol=1e-5)
    reg = load(saved, "regression")
    plain = reg.predict_mc(X, 30, seed=0)
    assert set(plain[0]) == {"mean", "std"}
    row = reg.predict_mc(X, 200, seed=0, interval=0.8)[0]
    assert set(row) == {"mean", "std", "interval"} and row["interval"]["level"] == 0.8
    assert (np.array(row["interval"]["lower"]) < np.array(row["interval"]["upper"])).all()


@pytest.mark.skipif(not JAX, reason="compiled functions are counted under JAX")
def test_batch_size_buckets_bound_the_compilations(saved: dict[str, Path]) -> None:
    p = load(saved, "batch_norm", fresh=True)
    assert p.compiled_count == 0
    for rows in (3, 5, 3):
        p.sample(_x(rows), 40, seed=0)
    assert p.compiled_count == 2  # buckets of 4 and 8 rows
    for rows in (3, 5, 3, 8):
        p.predict(_x(rows))
    assert p.compiled_count == 4
    p.sample(_x(3), 39, seed=0)  # 39 samples pad to 40: same function
    assert p.compiled_count == 4


def test_model_without_dropout_predicts_only() -> None:
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, activation="softmax")])
    p = Predictor(model, "classification")
    assert p.prefix is None and p.sampler is None
    assert p.predict(_x(2)).shape == (2, 3)
    with pytest.raises(ValueError, match="dropout"):
        p.predict_mc(_x(2), 10, seed=0)


def test_no_rows(saved: dict[str, Path]) -> None:
    p = load(saved, "batch_norm")
    assert p.sample(np.zeros((0, 6), "float32"), 5, seed=0).shape == (5, 0, 4)
    assert p.predict(np.zeros((0, 6), "float32")).shape == (0, 4)


def test_concurrent_calls_match_sequential_ones(saved: dict[str, Path]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    p = load(saved, "batch_norm")
    requests = [(_x(rows, seed=rows), seed) for rows, seed in [(1, 0), (3, 1), (5, 2), (2, 3)] * 2]
    expected = [p.sample(X, 20, seed) for X, seed in requests]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda r: p.sample(r[0], 20, r[1]), requests))
    for a, b in zip(expected, got, strict=True):
        assert np.array_equal(a, b)
