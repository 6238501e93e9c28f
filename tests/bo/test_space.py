import json
import math
import sys
from collections import Counter

import numpy as np
import pytest

from bo.space import CandidateTable, Categorical, Float, Int, Space


def make_space() -> Space:
    """lr (log float), width (int), opt (3-way categorical), decay (float): 6 encoded dims."""
    return Space(
        {
            "lr": Float(1e-4, 1e-1, log=True),
            "width": Int(1, 5),
            "opt": Categorical(["adam", "sgd", "rmsprop"]),
            "decay": Float(0.0, 10.0),
        }
    )


GOOD = {"lr": 10**-2.5, "width": 3, "opt": "sgd", "decay": 2.5}


# --- parameters --------------------------------------------------------------------------------


def test_params_store_plain_types():
    assert Float(0, 1) == Float(0.0, 1.0)
    assert type(Float(0, 1).low) is float
    width = Int(2.0, np.int64(8), log=True)
    assert (width.low, width.high, width.log) == (2, 8, True)
    assert type(width.low) is int and type(width.high) is int
    assert Categorical(["a", np.int64(3)]).choices == ("a", 3)
    assert type(Categorical([np.int64(3), 4]).choices[0]) is int


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: Float(1.0, 1.0), "low must be < high"),
        (lambda: Float(2.0, 1.0), "low must be < high"),
        (lambda: Float(0.0, math.inf), "high must be finite"),
        (lambda: Float(math.nan, 1.0), "low must be finite"),
        (lambda: Float("0", 1.0), "low must be a real number"),
        (lambda: Float(True, 2.0), "low must be a real number"),
        (lambda: Float(0.0, 1.0, log=True), "log=True needs low > 0"),
        (lambda: Float(-1.0, 1.0, log=True), "log=True needs low > 0"),
        (lambda: Int(0.5, 3), "low must be an integer"),
        (lambda: Int(0, 3.5), "high must be an integer"),
        (lambda: Int(0, 8, log=True), "log=True needs low > 0"),
        (lambda: Categorical([]), "must not be empty"),
        (lambda: Categorical("abc"), "must be a sequence"),
        (lambda: Categorical(["a", "b", "a"]), "'a' repeats"),
        (lambda: Categorical([1, 1.0]), "1.0 repeats"),
        (lambda: Categorical([None, 1]), "must be str, int, float or bool"),
        (lambda: Categorical([0.5, math.nan]), "must be finite"),
    ],
)
def test_param_validation(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bool_and_int_choices_are_distinct():
    cat = Categorical([1, True, 0, False])
    assert [cat.index(v) for v in (1, True, 0, False)] == [0, 1, 2, 3]
    assert cat.index(1.0) == 0  # numbers match by value
    with pytest.raises(ValueError, match="not one of the choices"):
        Categorical([True, False]).index(1)


def test_space_validation():
    with pytest.raises(ValueError, match="at least one"):
        Space({})
    with pytest.raises(ValueError, match="'a' must be a Float, Int or Categorical"):
        Space({"a": (0.0, 1.0)})
    with pytest.raises(ValueError, match="non-empty strings"):
        Space({"": Float(0, 1)})
    with pytest.raises(ValueError, match="params must be a mapping"):
        Space([("a", Float(0, 1))])


# --- description and encoding ------------------------------------------------------------------


def test_layout():
    space = make_space()
    assert space.names == ["lr", "width", "opt", "decay"]
    assert space.dim == 6
    assert space.encoded_names == ["lr", "width", "opt=adam", "opt=sgd", "opt=rmsprop", "decay"]


def test_encode_by_hand():
    space = make_space()
    # lr: (log10(1e-2.5) - (-4)) / 3 = 0.5; width: (3 - 1) / 4 = 0.5; decay: 2.5 / 10 = 0.25
    np.testing.assert_allclose(space.encode(GOOD), [0.5, 0.5, 0, 1, 0, 0.25], atol=1e-12)
    corner = {"lr": 1e-4, "width": 5, "opt": "rmsprop", "decay": 10.0}
    np.testing.assert_allclose(space.encode(corner), [0, 1, 0, 0, 1, 1], atol=1e-12)
    # log int: log(32) / log(1024) = 5 / 10
    assert Space({"n": Int(1, 1024, log=True)}).encode({"n": 32}) == pytest.approx([0.5])
    # ints and numpy scalars are fine for a Float, integral floats for an Int
    x = space.encode({"lr": np.float32(1e-2), "width": 3.0, "opt": "adam", "decay": 5})
    assert x[1] == 0.5 and x[5] == 0.5 and x.dtype == np.float64


def test_decode_by_hand():
    space = make_space()
    # lr at 0.5 -> 10^-2.5; width 1 + 0.6 * 4 = 3.4 -> 3; opt argmax -> sgd; decay 0.25 -> 2.5
    config = space.decode(np.array([0.5, 0.6, 0.2, 0.7, 0.1, 0.25]))
    assert config == {"lr": pytest.approx(10**-2.5), "width": 3, "opt": "sgd", "decay": 2.5}
    assert list(config) == space.names
    # 1 + 0.65 * 4 = 3.6 -> 4; out-of-range coordinates clip to the bounds; ties -> first choice
    config = space.decode(np.array([-0.5, 0.65, 0.3, 0.3, 0.3, 1.5]))
    assert config == {"lr": 1e-4, "width": 4, "opt": "adam", "decay": 10.0}
    assert space.decode(np.array([2.0, -1.0, 0, 0, 1, 0]))["width"] == 1
    assert Space({"n": Int(1, 1024, log=True)}).decode(np.array([0.5])) == {"n": 32}


def test_decode_returns_plain_types():
    space = Space(
        {
            "f": Float(0, 1),
            "i": Int(-3, 3),
            "c": Categorical(["a", 3, 0.5, True]),
        }
    )
    for x, choice in zip(np.eye(4), ["a", 3, 0.5, True], strict=True):
        config = space.decode(np.concatenate([[0.3, 0.5], x]))
        assert type(config["f"]) is float and type(config["i"]) is int and config["i"] == 0
        assert type(config["c"]) is type(choice) and config["c"] == choice


def test_round_trip_on_samples():
    space = make_space()
    configs = space.sample(200, seed=3, method="random")
    X = space.encode_many(configs)
    assert X.shape == (200, 6) and X.min() >= 0 and X.max() <= 1
    np.testing.assert_array_equal(X[:, 2:5].sum(axis=1), 1.0)
    for config, decoded in zip(configs, space.decode_many(X), strict=True):
        assert decoded["width"] == config["width"] and decoded["opt"] == config["opt"]
        assert decoded["lr"] == pytest.approx(config["lr"], rel=1e-12)
        assert decoded["decay"] == pytest.approx(config["decay"], rel=1e-12, abs=1e-12)
    for config in configs[:20]:
        assert space.decode(space.encode(config))["width"] == config["width"]


def test_round_trip_at_bounds_stays_in_bounds():
    # exp(log(1e-4)) = 1.0000000000000009e-4 and exp(log(3.0)) = 3.0000000000000004: end points
    # must come back exactly, not just inside the bounds
    space = Space({"a": Float(1e-4, 0.1, log=True), "b": Float(1e-7, 3.0, log=True)})
    for config in ({"a": 1e-4, "b": 1e-7}, {"a": 0.1, "b": 3.0}):
        assert space.decode(space.encode(config)) == config
    ints = Space({"n": Int(3, 999, log=True)})
    assert [ints.decode(ints.encode({"n": n}))["n"] for n in (3, 4, 998, 999)] == [3, 4, 998, 999]


def test_encode_many_and_decode_many_shapes():
    space = make_space()
    assert space.encode_many([]).shape == (0, 6)
    assert space.decode_many(np.zeros((0, 6))) == []
    with pytest.raises(ValueError, match="sequence of configurations"):
        space.encode_many(GOOD)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"lr": "0.01"}, "'lr' \\(Float\\) needs a number, got str"),
        ({"lr": True}, "'lr' \\(Float\\) needs a number, got bool"),
        ({"lr": None}, "'lr' \\(Float\\) needs a number"),
        ({"lr": math.nan}, "'lr' \\(Float\\) is NaN"),
        ({"lr": 0.5}, "'lr' = 0.5 is out of bounds"),
        ({"lr": math.inf}, "'lr' = inf is out of bounds"),
        ({"width": 2.5}, "'width' \\(Int\\) needs an integer, got 2.5"),
        ({"width": 6}, "'width' = 6 is out of bounds \\[1, 5\\]"),
        ({"width": np.nan}, "'width' \\(Int\\) is NaN"),
        ({"width": "3"}, "'width' \\(Int\\) needs a number"),
        ({"opt": "adamw"}, "'opt': 'adamw' is not one of the choices"),
        ({"opt": ["adam"]}, "'opt': \\['adam'\\] is not one of the choices"),
        ({"opt": np.array(["adam", "sgd"])}, "'opt': .* is not one of the choices"),
        ({"decay": -0.1}, "'decay' = -0.1 is out of bounds"),
    ],
)
def test_invalid_values_name_the_parameter(change, match):
    space = make_space()
    config = {**GOOD, **change}
    with pytest.raises(ValueError, match=match):
        space.encode(config)
    with pytest.raises(ValueError, match=match):
        space.validate(config)
    assert not space.contains(config)


def test_missing_and_unknown_keys():
    space = make_space()
    with pytest.raises(ValueError, match="missing parameter\\(s\\) 'width', 'decay'"):
        space.encode({"lr": 1e-3, "opt": "sgd"})
    with pytest.raises(ValueError, match="unknown parameter\\(s\\) 'momentum'"):
        space.encode({**GOOD, "momentum": 0.9})
    with pytest.raises(ValueError, match="config must be a mapping"):
        space.encode([0.5, 3, "sgd", 2.5])


def test_validate_canonicalises():
    space = make_space()
    given = {"decay": np.int64(2), "opt": "adam", "width": 4.0, "lr": np.float32(0.5e-2)}
    config = space.validate(given)
    assert list(config) == space.names
    assert config == {"lr": pytest.approx(5e-3), "width": 4, "opt": "adam", "decay": 2.0}
    assert type(config["width"]) is int and type(config["decay"]) is float
    assert space.contains(GOOD)
    numbers = Space({"bs": Categorical([16, 32, 64])})
    assert numbers.validate({"bs": 32.0}) == {"bs": 32} and numbers.contains({"bs": np.int64(64)})
    assert not numbers.contains({"bs": True})


def test_decode_validation():
    space = make_space()
    with pytest.raises(ValueError, match="x must have shape \\(6,\\)"):
        space.decode(np.zeros(5))
    with pytest.raises(ValueError, match="X must have shape \\(n, 6\\)"):
        space.decode_many(np.zeros(6))
    with pytest.raises(ValueError, match="X must be finite"):
        space.decode(np.array([0.5, np.nan, 1, 0, 0, 0.5]))


def test_single_choice_categorical():
    space = Space({"fixed": Categorical(["only"]), "x": Float(0, 1)})
    assert space.dim == 2 and space.encoded_names == ["fixed=only", "x"]
    np.testing.assert_allclose(space.encode({"fixed": "only", "x": 0.25}), [1.0, 0.25])
    assert all(c["fixed"] == "only" for c in space.sample(8, seed=0))
    perturbed = space.perturb({"fixed": "only", "x": 0.5}, 20, change_prob=1.0, seed=0)
    assert all(c["fixed"] == "only" for c in perturbed)


# --- sampling ----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("error")  # no scipy balance warning for n that is not a power of 2
@pytest.mark.parametrize("method", ["sobol", "random"])
def test_sample_in_bounds_and_deterministic(method):
    space = make_space()
    configs = space.sample(100, seed=7, method=method)
    assert len(configs) == 100 and all(space.contains(c) for c in configs)
    assert all(list(c) == space.names for c in configs)
    assert configs == space.sample(100, seed=7, method=method)
    assert configs != space.sample(100, seed=8, method=method)
    assert space.sample(0, seed=7, method=method) == []


def test_sobol_is_a_sequence():
    space = make_space()
    assert space.sample(10, seed=1) == space.sample(16, seed=1)[:10]
    assert space.sample(10, seed=1) != space.sample(10, seed=1, method="random")


def test_sobol_covers_the_space():
    space = Space(
        {
            "lr": Float(1e-4, 1e-1, log=True),
            "decay": Float(0.0, 10.0),
            "width": Int(1, 5),
            "depth": Int(1, 8, log=True),
            "opt": Categorical(["adam", "sgd", "rmsprop"]),
        }
    )
    configs = space.sample(1000, seed=0)
    X = space.encode_many(configs)
    assert X[:, 0].mean() == pytest.approx(0.5, abs=0.01)  # log-uniform lr: uniform in log
    assert np.mean([c["decay"] for c in configs]) == pytest.approx(5.0, abs=0.1)
    assert min(c["decay"] for c in configs) < 0.05 and max(c["decay"] for c in configs) > 9.95
    # every integer equally likely, end points included (rounding a decoded value would not be)
    widths = Counter(c["width"] for c in configs)
    assert sorted(widths) == [1, 2, 3, 4, 5]
    assert all(count == pytest.approx(200, abs=5) for count in widths.values())
    # log int over [0.5, 8.5]: P(depth = 1) = log(1.5 / 0.5) / log(8.5 / 0.5) = 0.3878
    depths = Counter(c["depth"] for c in configs)
    assert sorted(depths) == list(range(1, 9))
    assert depths[1] / 1000 == pytest.approx(math.log(3) / math.log(17), abs=0.01)
    opts = Counter(c["opt"] for c in configs)
    assert all(opts[o] == pytest.approx(333, abs=5) for o in ("adam", "sgd", "rmsprop"))


def test_random_sampling_covers_choices():
    space = Space({"opt": Categorical(["a", "b", "c", "d"])})
    counts = Counter(c["opt"] for c in space.sample(4000, seed=0, method="random"))
    assert all(counts[o] == pytest.approx(1000, abs=100) for o in "abcd")  # 3 sigma = 82


def test_sample_validation():
    space = make_space()
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        space.sample(-1, seed=0)
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        space.sample(2.0, seed=0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        space.sample(4, seed=None)
    with pytest.raises(ValueError, match="method must be 'sobol' or 'random'"):
        space.sample(4, seed=0, method="lhs")


# --- perturbation ------------------------------------------------------------------------------


def test_perturb_is_local_and_in_space():
    space = make_space()
    base = {"lr": 10**-2.5, "width": 3, "opt": "sgd", "decay": 5.0}
    configs = space.perturb(base, 4000, scale=0.05, change_prob=0.2, seed=0)
    assert len(configs) == 4000 and all(space.contains(c) for c in configs)
    X, x = space.encode_many(configs), space.encode(base)
    # no clipping from the middle: E|N(0, s)| = s * sqrt(2 / pi) = 0.0399
    for j in (0, 5):
        assert np.abs(X[:, j] - x[j]).mean() == pytest.approx(0.05 * math.sqrt(2 / math.pi), 0.05)
        assert (X[:, j] - x[j]).mean() == pytest.approx(0.0, abs=0.003)
    # width moves when |noise| > 0.125 (half a step of 0.25): P = 2 * (1 - Phi(2.5)) = 0.0124
    assert np.mean([c["width"] != 3 for c in configs]) == pytest.approx(0.0124, abs=0.006)
    opts = Counter(c["opt"] for c in configs)
    assert opts["sgd"] / 4000 == pytest.approx(0.8, abs=0.02)
    assert opts["adam"] / 4000 == pytest.approx(0.1, abs=0.015)
    assert opts["rmsprop"] / 4000 == pytest.approx(0.1, abs=0.015)


def test_perturb_clips_and_is_deterministic():
    space = make_space()
    edge = {"lr": 1e-1, "width": 5, "opt": "adam", "decay": 0.0}
    configs = space.perturb(edge, 200, scale=0.3, seed=1)
    assert all(space.contains(c) for c in configs)
    assert any(c["lr"] == 1e-1 for c in configs) and any(c["decay"] == 0.0 for c in configs)
    assert configs == space.perturb(edge, 200, scale=0.3, seed=1)
    assert configs != space.perturb(edge, 200, scale=0.3, seed=2)
    still = space.perturb(GOOD, 5, scale=0.0, change_prob=0.0, seed=0)
    assert all(c == pytest.approx(GOOD) for c in still)
    assert space.perturb(GOOD, 0, seed=0) == []


def test_perturb_validation():
    space = make_space()
    with pytest.raises(ValueError, match="'width' = 9 is out of bounds"):
        space.perturb({**GOOD, "width": 9}, 3, seed=0)
    with pytest.raises(ValueError, match="scale must be a finite number >= 0"):
        space.perturb(GOOD, 3, scale=-0.1, seed=0)
    with pytest.raises(ValueError, match="change_prob must be in \\[0, 1\\]"):
        space.perturb(GOOD, 3, change_prob=1.5, seed=0)


# --- storage -----------------------------------------------------------------------------------


def test_json_round_trip():
    space = Space(
        {
            "lr": Float(1e-4, 1e-1, log=True),
            "n": Int(2, 64, log=True),
            "c": Categorical(["a", 3, 0.5, 1.0 * 2, True]),
        }
    )
    data = json.loads(json.dumps(space.to_dict()))
    assert data["format_version"] == 1
    assert [p["name"] for p in data["params"]] == ["lr", "n", "c"]
    back = Space.from_dict(data)
    assert back == space and hash(back) == hash(space)
    assert [type(c) for c in back.params["c"].choices] == [str, int, float, float, bool]
    configs = space.sample(16, seed=0)
    np.testing.assert_array_equal(back.encode_many(configs), space.encode_many(configs))


def test_space_equality_depends_on_order_and_params():
    a, b = Float(0, 1), Int(0, 3)
    assert Space({"a": a, "b": b}) == Space({"a": Float(0.0, 1.0), "b": Int(0, 3)})
    assert Space({"a": a, "b": b}) != Space({"b": b, "a": a})
    assert Space({"a": a}) != Space({"a": Float(0, 1, log=False), "b": b})
    assert Space({"a": a}) != Space({"a": Float(0, 2)})


def test_from_dict_errors():
    good = make_space().to_dict()
    with pytest.raises(ValueError, match="format_version 2"):
        Space.from_dict({**good, "format_version": 2})
    bad_type = {**good, "params": [{"name": "x", "type": "normal", "low": 0, "high": 1}]}
    with pytest.raises(ValueError, match="parameter 'x': unknown type 'normal'"):
        Space.from_dict(bad_type)
    no_high = {**good, "params": [{"name": "x", "type": "float", "low": 0}]}
    with pytest.raises(ValueError, match="parameter 'x': missing field 'high'"):
        Space.from_dict(no_high)
    bad_bounds = {**good, "params": [{"name": "x", "type": "int", "low": 3, "high": 1}]}
    with pytest.raises(ValueError, match="parameter 'x': Int: low must be < high"):
        Space.from_dict(bad_bounds)
    twice = {**good, "params": good["params"][:1] * 2}
    with pytest.raises(ValueError, match="'lr' appears twice"):
        Space.from_dict(twice)


# --- candidate tables --------------------------------------------------------------------------


def test_candidate_table_from_configs():
    space = make_space()
    configs = [GOOD, {"lr": 1e-3, "width": 1.0, "opt": "adam", "decay": 0}]
    table = CandidateTable.from_configs(space, configs)
    assert len(table) == 2 and table.dim == 6 and table.space == space
    np.testing.assert_array_equal(table.encoded, space.encode_many(configs))
    second = table.config(1)
    assert second == {"lr": 1e-3, "width": 1, "opt": "adam", "decay": 0.0}
    assert type(second["width"]) is int and type(second["decay"]) is float
    second["width"] = 5  # a copy: the table is unchanged
    assert table.config(1)["width"] == 1 and table.config(-1) == table.config(1)
    with pytest.raises(ValueError, match="read-only"):
        table.encoded[0, 0] = 0.0
    with pytest.raises(IndexError):
        table.config(2)


def test_candidate_table_from_configs_validates():
    space = make_space()
    with pytest.raises(ValueError, match="configs\\[1\\]: parameter 'opt'"):
        CandidateTable.from_configs(space, [GOOD, {**GOOD, "opt": "lbfgs"}])
    with pytest.raises(ValueError, match="non-empty sequence"):
        CandidateTable.from_configs(space, [])


def test_candidate_table_from_encoded():
    X = np.array([[0.0, 0.5], [1.0, 0.25], [0.3, 0.3]])
    table = CandidateTable.from_encoded(X)
    assert len(table) == 3 and table.dim == 2 and table.space is None
    assert table.config(1) == {"x0": 1.0, "x1": 0.25}
    X[0, 0] = 0.9  # the table holds its own copy
    assert table.encoded[0, 0] == 0.0
    named = CandidateTable.from_encoded(X, names=["lr", "wd"])
    assert named.config(2) == {"lr": 0.3, "wd": 0.3}
    with pytest.raises(ValueError, match="encoded must be finite and in \\[0, 1\\]"):
        CandidateTable.from_encoded(np.array([[0.5, 1.5]]))
    with pytest.raises(ValueError, match="encoded must have shape \\(n, dim\\)"):
        CandidateTable.from_encoded(np.zeros(3))
    with pytest.raises(ValueError, match="names must have 2 entries"):
        CandidateTable.from_encoded(X, names=["a"])
    with pytest.raises(ValueError, match="names must be distinct"):
        CandidateTable.from_encoded(X, names=["a", "a"])


def test_groups_of_encoded_dimensions():
    space = Space({"lr": Float(1e-4, 1e-1, log=True), "act": Categorical(["a", "b", "c"]),
                   "depth": Int(1, 4)})  # fmt: skip
    assert space.groups == ((0,), (1, 2, 3), (4,))
    table = CandidateTable.from_configs(space, [{"lr": 1e-3, "act": "b", "depth": 2}])
    assert table.groups == space.groups
    X = np.array([[0.2, 1.0, 0.0], [0.7, 0.0, 1.0]])
    assert CandidateTable.from_encoded(X).groups == ((0,), (1,), (2,))
    assert CandidateTable.from_encoded(X, groups=[[1, 2], [0]]).groups == ((1, 2), (0,))
    for bad in ([[0, 1]], [[0, 1], [1, 2]], [[0, 1, 2], []], [[0, 1, 3]]):
        with pytest.raises(ValueError, match="groups must split the 3 encoded dims"):
            CandidateTable.from_encoded(X, groups=bad)


# --- ConfigSpace -------------------------------------------------------------------------------


def test_from_configspace_without_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "ConfigSpace", None)  # makes `import ConfigSpace` fail
    with pytest.raises(ImportError, match="pip install ConfigSpace"):
        Space.from_configspace(object())


def test_from_configspace():
    cs_mod = pytest.importorskip("ConfigSpace")
    cs = cs_mod.ConfigurationSpace()
    add = cs.add if hasattr(cs, "add") else cs.add_hyperparameters
    add(
        [
            cs_mod.UniformFloatHyperparameter("lr", 1e-4, 1e-1, log=True),
            cs_mod.UniformIntegerHyperparameter("width", 1, 5),
            cs_mod.CategoricalHyperparameter("opt", ["adam", "sgd"]),
        ]
    )
    space = Space.from_configspace(cs)
    expected = {
        "lr": Float(1e-4, 1e-1, log=True),
        "width": Int(1, 5),
        "opt": Categorical(["adam", "sgd"]),
    }
    assert space.params == expected  # ConfigSpace may reorder names
    normal = cs_mod.ConfigurationSpace()
    add = normal.add if hasattr(normal, "add") else normal.add_hyperparameters
    add([cs_mod.NormalFloatHyperparameter("x", mu=0.0, sigma=1.0, lower=-3.0, upper=3.0)])
    with pytest.raises(ValueError, match="'x' has unsupported type NormalFloatHyperparameter"):
        Space.from_configspace(normal)
    with pytest.raises(ValueError, match="cs must be a ConfigSpace.ConfigurationSpace"):
        Space.from_configspace({"lr": (1e-4, 1e-1)})
    if hasattr(cs_mod, "EqualsCondition") and hasattr(cs, "add"):  # ConfigSpace >= 1.0
        cs.add(cs_mod.EqualsCondition(cs["lr"], cs["opt"], "adam"))
        with pytest.raises(ValueError, match="conditional hyperparameters"):
            Space.from_configspace(cs)


def test_sample_encoded_matches_sample_and_perturb_encoded_is_canonical():
    space = Space(
        {
            "lr": Float(1e-4, 1e-1, log=True),
            "width": Int(8, 256, log=True),
            "act": Categorical(["relu", "tanh", "gelu"]),
            "depth": Int(1, 5),
        }
    )
    for method in ("sobol", "random"):
        X = space.sample_encoded(257, seed=4, method=method)
        expected = space.encode_many(space.sample(257, seed=4, method=method))
        np.testing.assert_array_equal(X, expected)
    base = space.sample(1, seed=0)[0]
    P = space.perturb_encoded(base, 300, scale=0.3, change_prob=0.5, seed=2)
    # every row is the exact encoding of a valid configuration (Ints snapped, one-hot blocks)
    np.testing.assert_allclose(P, space.encode_many(space.decode_many(P)), atol=1e-12)
    assert space.decode_many(P) == space.perturb(base, 300, scale=0.3, change_prob=0.5, seed=2)

