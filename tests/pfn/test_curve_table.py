"""Reading the shared HDF5 curve layout (pfn/curve_table.py)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from pfn.curve_table import CurveTable, encode_configs, read_curve_tables


def test_reads_every_table_in_file_order_and_drops_step_zero(curve_file):
    tables = read_curve_tables(curve_file)
    assert [t.name for t in tables] == ["acc_task", "loss_task"]  # h5py lists groups sorted
    loss = tables[1]
    assert loss.n_curves == 30 and loss.n_steps == 11  # 12 recorded, step 0 dropped
    np.testing.assert_array_equal(loss.steps, np.arange(1, 12) * 100.0)
    with h5py.File(curve_file) as fh:
        np.testing.assert_array_equal(loss.curves, fh["loss_task/curves"][:, 1:])
    assert loss.higher_is_better is False and loss.metric == "valid_loss"
    assert loss.lower_bound == 0.0 and loss.upper_bound is None  # inf -> unbounded


def test_encoding_by_hand():
    raw = np.array([[1e-4, 8.0], [1e-2, 36.0], [1e-1, 64.0], [1e-1, 8.0]])
    enc = encode_configs(
        raw, names=["lr", "width"], log_scale=np.array([True, False]), categories=None
    )
    assert enc.names == ("lr", "width") and enc.groups == ((0,), (1,))
    # log10: -4, -2, -1 over [-4, -1] -> 0, 2/3, 1; width over [8, 64] -> 0, 0.5, 1
    np.testing.assert_allclose(enc.values[:, 0], [0.0, 2 / 3, 1.0, 1.0])
    np.testing.assert_allclose(enc.values[:, 1], [0.0, 0.5, 1.0, 0.0])


def test_constant_column_becomes_one_half_and_categories_become_one_hot():
    enc = encode_configs(
        np.array([[2.0], [0.0], [2.0]]),
        names=["learner"],
        log_scale=np.array([False]),
        categories=["a", "b", "c"],
    )
    assert enc.names == ("learner=a", "learner=b", "learner=c")
    np.testing.assert_array_equal(enc.values, [[0, 0, 1], [1, 0, 0], [0, 0, 1]])
    enc = encode_configs(
        np.array([[3.0], [3.0]]), names=["x"], log_scale=np.array([False]), categories=None
    )
    np.testing.assert_array_equal(enc.values, [[0.5], [0.5]])


def test_hp_groups_keep_a_categorical_together(curve_file):
    tables = {t.name: t for t in read_curve_tables(curve_file)}
    acc = tables["acc_task"]  # one categorical learner column of 3 categories
    assert acc.hp_groups == ((0, 1, 2),)
    numeric = tables["loss_task"]
    assert numeric.hp_groups == tuple((j,) for j in range(numeric.configs.shape[1]))
    # groups come from the encoding, not from the names: "=" in a numeric name is no one-hot
    enc = encode_configs(
        np.array([[0.1, 3.0, 2.0, 0.5], [0.7, 5.0, 0.0, 0.25]]),
        names=["a=1", "a=2", "opt", "b"],
        log_scale=np.array([False, False, False, False]),
        categories=["sgd", "adam", "rmsprop"],
    )
    assert enc.names == ("a=1", "a=2", "opt=sgd", "opt=adam", "opt=rmsprop", "b")
    assert enc.groups == ((0,), (1,), (2, 3, 4), (5,))


def test_a_table_checks_its_groups(curve_file):
    acc = read_curve_tables(curve_file, ["acc_task"])[0]
    fields = {f: getattr(acc, f) for f in acc.__dataclass_fields__}
    assert CurveTable(**{**fields, "hp_groups": ()}).hp_groups == ((0,), (1,), (2,))
    for bad in (((0, 1),), ((0, 2), (1,)), ((0,), (), (1, 2)), ((1, 2), (0,))):
        with pytest.raises(ValueError, match="hp_groups"):
            CurveTable(**{**fields, "hp_groups": bad})
    with pytest.raises(ValueError, match="hp_names"):
        CurveTable(**{**fields, "hp_names": ("learner",)})


def test_times_step_and_index(curve_file):
    acc = read_curve_tables(curve_file, ["acc_task"])[0]
    np.testing.assert_allclose(acc.times(), acc.steps / 512.0)  # default: step / max step
    np.testing.assert_allclose(acc.times("index"), np.arange(1, 7) / 6)
    with pytest.raises(ValueError, match="time mode"):
        acc.times("log")


def test_bad_input_raises_clearly(curve_file, tmp_path):
    with pytest.raises(FileNotFoundError):
        read_curve_tables(tmp_path / "nope.h5")
    with pytest.raises(ValueError, match="no task"):
        read_curve_tables(curve_file, ["missing_task"])
    with pytest.raises(ValueError, match="categorical"):
        encode_configs(
            np.array([[0.0, 1.0], [1.0, 0.0]]),
            names=["a", "b"],
            log_scale=np.array([False, False]),
            categories=["x", "y"],
        )
    with pytest.raises(ValueError, match="log-scale"):
        encode_configs(
            np.array([[0.0], [1.0]]), names=["lr"], log_scale=np.array([True]), categories=None
        )
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as fh:
        fh.create_group("t")["curves"] = np.zeros((2, 3))
    with pytest.raises(ValueError, match="lacks"):
        read_curve_tables(bad)
