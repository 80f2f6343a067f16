from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from tests.conftest import TINY_TRAIN

from calohls.cli import main
from calohls.config import ModelConfig, QATConfig, TrainConfig, load_config
from calohls.data.features import FEATURES, cell_features
from calohls.data.hdf5 import read_clusters
from calohls.errors import ConfigError, FileExistsRefusedError, InputFileError
from calohls.model.prepare import split_events
from calohls.model.qat import Checkpoint, build_qat_deepsets, pareto_front, select_checkpoint, train_qat
from calohls.model.run_folder import load_run, open_run
from calohls.model.train import train
from calohls.stages.evaluate import evaluate_and_write

#: A tiny QAT run: Φ 4, F 4 on 16 cells, 2000 clusters, a few epochs. Its betas keep the EBOPs term well below the
#: loss (≈ 0.02 vs ≈ 1e-3), so that a run with a large beta, where EBOPs dominate, ends with clearly fewer EBOPs.
TINY_QAT = {
    "model": {"phi": "4", "f": "4", "max_cells": 16},
    "epochs": 6,
    "batch_size": 64,
    "learning_rate": 0.005,
    "seed": 3,
    "max_clusters": 2000,
    "beta_start": 1e-9,
    "beta_end": 1e-8,
}
#: The same run from the command line.
TINY_QAT_CLI = ["--phi", "4", "--f", "4", "--max-cells", "16", "--epochs", "6", "--batch-size", "64",
                "--learning-rate", "0.005", "--seed", "3", "--max-clusters", "2000", "--beta-start", "1e-9",
                "--beta-end", "1e-8", "--hide-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def qat_run(sim_file, tmp_path_factory):
    run = tmp_path_factory.mktemp("qat") / "tiny"
    train_qat(sim_file, run, QATConfig.model_validate(TINY_QAT))
    return run


def _history(run):
    return json.loads((run / "history.json").read_text())


def test_run_folder_is_complete(qat_run):
    names = {p.name for p in qat_run.iterdir()}
    assert {"run.json", "config.yaml", "model.keras", "features.json", "correction.json", "split.npz"} <= names
    assert {"history.json", "pareto", "pareto.json"} <= names
    info = load_run(qat_run, "qat").record
    assert info["stage"] == "qat"
    assert info["versions"]["hgq2"] == "0.2.0"
    assert info["model"]["parameters"] == len(FEATURES) * 4 + 4 * 4 + 4 + 4 + 1  # weights and biases only
    assert 0 < info["weights_nonzero"] <= info["model"]["parameters"]
    config = yaml.safe_load((qat_run / "config.yaml").read_text())
    assert config["model"] == {"preset": "small", "phi": [4], "f": [4], "max_cells": 16, "activation": "relu"}
    assert config["beta_end"] == 1e-8
    history = _history(qat_run)
    assert len(history) == info["epochs"] == 6
    assert all({"loss", "val_loss", "val_mse", "ebops", "beta"} <= row.keys() for row in history)
    betas = [row["beta"] for row in history]
    assert betas[0] == pytest.approx(1e-9)
    assert betas[-1] == pytest.approx(1e-8)
    assert all(b1 >= b0 for b0, b1 in itertools.pairwise(betas))
    assert not list(qat_run.parent.glob(".*partial*"))


def test_pareto_front_and_selection(qat_run):
    info = load_run(qat_run, "qat").record
    points = json.loads((qat_run / "pareto.json").read_text())
    assert len(points) == info["pareto_points"] >= 1
    assert {p["file"] for p in points} == {f"pareto/{p.name}" for p in (qat_run / "pareto").iterdir()}
    for p in points:
        assert not any(q is not p and q["val_loss"] <= p["val_loss"] and q["ebops"] <= p["ebops"] for q in points), (
            f"{p} is dominated"
        )
    assert [p["ebops"] for p in points] == sorted(p["ebops"] for p in points)
    # the rule: fewest EBOPs within max_loss_increase of the best validation loss
    config = load_config(QATConfig, yaml.safe_load((qat_run / "config.yaml").read_text()))
    assert config.select == "ebops"
    best = min(p["val_loss"] for p in points)
    allowed = [p for p in points if p["val_loss"] <= (1 + config.max_loss_increase) * best]
    (selected,) = [p for p in points if p["selected"]]
    assert selected["ebops"] == min(p["ebops"] for p in allowed)
    assert info["ebops"] == selected["ebops"]
    assert info["best_epoch"] == selected["epoch"]
    assert (qat_run / "model.keras").read_bytes() == (qat_run / selected["file"]).read_bytes()
    history = _history(qat_run)
    assert selected["beta"] == history[selected["epoch"] - 1]["beta"]


def test_pareto_helpers():
    points = [
        Checkpoint(1, 0.030, 900),
        Checkpoint(2, 0.020, 1000),
        Checkpoint(3, 0.021, 500),
        Checkpoint(4, 0.021, 600),  # dominated by 3
        Checkpoint(5, 0.025, 500),  # dominated by 3 (same EBOPs, worse loss)
        Checkpoint(6, 0.020, 1000),  # identical to 2: the first is kept
        Checkpoint(7, 0.040, 100),
    ]
    front = pareto_front(points)
    assert [p.epoch for p in front] == [7, 3, 2]
    assert select_checkpoint(front, "loss", 0.05).epoch == 2
    assert select_checkpoint(front, "ebops", 0.05).epoch == 3
    assert select_checkpoint(front, "ebops", 0.0).epoch == 2
    assert select_checkpoint(front, "ebops", 1.0).epoch == 7
    with pytest.raises(ConfigError, match="no Pareto checkpoint"):
        select_checkpoint([], "ebops", 0.05)


def test_higher_beta_gives_fewer_ebops(qat_run, sim_file, tmp_path):
    run = tmp_path / "high"
    result = train_qat(sim_file, run, QATConfig.model_validate({**TINY_QAT, "beta_start": 1e-6, "beta_end": 1e-5}))
    low, high = _history(qat_run), _history(run)
    assert high[-1]["ebops"] < 0.8 * low[-1]["ebops"]
    assert high[-1]["ebops"] < high[0]["ebops"]
    assert result.ebops < load_run(qat_run, "qat").record["ebops"]


def test_open_run_predicts_and_evaluates(qat_run, sim_file):
    run = open_run(qat_run)
    assert run.info["stage"] == "qat"
    assert isinstance(run.config, QATConfig)
    batch = read_clusters(sim_file).select(run.file_index("test"))
    e = run.predict(batch)
    assert e.shape == batch["e_true"].shape
    assert np.all(np.isfinite(e))
    assert np.all(e > 0)
    # the same split as float training with the same data and seed
    event = read_clusters(sim_file)["event"][run.split["index"]]
    np.testing.assert_array_equal(split_events(event, 3, 0.15, 0.15)["test"], run.split["test"])
    evaluate_and_write(qat_run)
    metrics = json.loads((qat_run / "eval" / "metrics.json").read_text())
    assert metrics["test_clusters"] == run.split["test"].size


def test_padding_adds_nothing(qat_run, sim_file):
    """On the trained quantized model, padded (all-zero) cells stay exactly zero through Φ, so the output is that
    of the sum over the real cells alone."""
    import keras

    run = open_run(qat_run)
    model = run.model
    batch = read_clusters(sim_file).select(run.file_index("test")[:300])
    x = run.scaler.transform(cell_features(batch, run.scaler.max_cells)).astype("float32")
    padding = np.all(x == 0, axis=-1)
    assert padding.any()
    assert (~padding).any()
    phi = keras.Model(model.input, model.get_layer("phi_1").output)
    phi_out = np.asarray(phi(x, training=False))
    assert np.all(phi_out[padding] == 0)
    # the sum over the real cells only (through the pooling's input quantizer), then the F layers
    ksum = model.get_layer("ksum")
    quantized = np.asarray(ksum.iq(phi_out, training=False))
    pooled = np.where(padding[..., None], np.nan, quantized)
    pooled = np.array([np.nansum(q, axis=0) for q in pooled]) / x.shape[1]
    h = pooled
    for layer in model.layers[model.layers.index(ksum) + 1 :]:
        h = layer(h, training=False)
    np.testing.assert_allclose(np.asarray(h), model.predict(x, verbose=0), rtol=1e-6, atol=1e-7)


def test_build_qat_deepsets():
    model = build_qat_deepsets(ModelConfig(phi=(6, 5), f=(4,), max_cells=8), len(FEATURES), seed=1, output_mean=0.25)
    assert [layer.name for layer in model.layers[1:]] == ["phi_1", "phi_2", "ksum", "f_1", "output"]
    assert model.get_layer("phi_1").bias is None
    assert model.get_layer("phi_2").bias is None
    assert float(np.asarray(model.get_layer("output").bias)[0]) == 0.25
    with pytest.raises(ConfigError, match="n_features=0"):
        build_qat_deepsets(ModelConfig(max_cells=8), 0)


def test_load_run_stage_mismatch_is_one_line(qat_run, tmp_path):
    with pytest.raises(InputFileError, match="stage 'qat', not 'train'; give a folder made by `calohls train`") as err:
        load_run(qat_run, "train")
    assert "\n" not in str(err.value)
    assert load_run(qat_run, ("train", "qat")).stage == "qat"
    with pytest.raises(InputFileError, match="not a calohls run folder"):
        open_run(tmp_path)


def test_init_from_float_starts_where_float_training_ended(sim_file, tmp_path):
    # a float run on the plain MSE, the loss QAT fine-tunes on, so that the two losses compare
    trained_run = tmp_path / "float"
    train(sim_file, trained_run, TrainConfig.model_validate({**TINY_TRAIN, "energy_weight": 0, "loss": "mse"}))
    options = {"model": {"preset": "tiny", "max_cells": 16}, "epochs": 1, "batch_size": 128, "seed": 3,
               "beta_start": 1e-9, "beta_end": 1e-9}  # fmt: skip
    warm = train_qat(sim_file, tmp_path / "warm", QATConfig.model_validate({**options, "init_from": trained_run}))
    cold = train_qat(sim_file, tmp_path / "cold", QATConfig.model_validate(options))
    float_loss = load_run(trained_run, "train").record["best_val_loss"]
    # one epoch from the float weights is near the float loss; one from random weights is far from it
    assert warm.best_val_loss < 1.3 * float_loss < cold.best_val_loss
    # the copied weights expect the float run's feature scaling, and the run folder says where it started
    assert (warm.run_dir / "features.json").read_text() == (trained_run / "features.json").read_text()
    assert yaml.safe_load((warm.run_dir / "config.yaml").read_text())["init_from"] == str(trained_run)


def test_init_from_another_size_or_stage_is_refused(trained_run, qat_run, sim_file, tmp_path):
    with pytest.raises(ConfigError, match=r"Φ widths \(8, 8\) \(QAT \(4,\)\), F widths \(8,\) \(QAT \(4,\)\);") as info:
        train_qat(sim_file, tmp_path / "x", QATConfig.model_validate({**TINY_QAT, "init_from": trained_run}))
    assert "max_cells" not in str(info.value)  # only what differs is named
    with pytest.raises(InputFileError, match="stage 'qat'"):
        train_qat(sim_file, tmp_path / "y", QATConfig.model_validate({**TINY_QAT, "init_from": qat_run}))
    assert not (tmp_path / "x").exists()
    assert not (tmp_path / "y").exists()


def test_refuses_to_overwrite(qat_run, sim_file):
    with pytest.raises(FileExistsRefusedError, match="--overwrite"):
        train_qat(sim_file, qat_run, QATConfig.model_validate(TINY_QAT))


def test_config_defaults_and_errors():
    config = load_config(QATConfig, None, model={"phi": "8", "preset": None})
    assert config.model.preset == "small"
    assert config.model.max_cells == 16
    assert config.model.phi == (8,)
    assert QATConfig().model.phi_widths == (16, 16)
    assert QATConfig(epochs=10, beta_ramp=0.5).ramp_epochs == 5
    with pytest.raises(ConfigError, match=r"beta_end=-1.*greater than 0"):
        load_config(QATConfig, None, beta_end=-1)
    with pytest.raises(ConfigError, match="beta_end must not be below beta_start"):
        load_config(QATConfig, None, beta_start=1e-5, beta_end=1e-6)
    with pytest.raises(ConfigError, match="select='best'"):
        load_config(QATConfig, None, select="best")


@pytest.mark.usefixtures("_restore_logging")
def test_cli_end_to_end_is_reproducible(qat_run, sim_file, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(main, ["qat", str(sim_file), "-o", str(out), *TINY_QAT_CLI])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("QAT (4,)→(4,) on ")
    assert "EBOPs" in result.stdout
    assert "Pareto points" in result.stdout
    assert f"calohls evaluate {out}" in result.stderr
    # the same options and seed as the fixture: the same training, epoch by epoch
    assert [r["val_loss"] for r in _history(out)] == [r["val_loss"] for r in _history(qat_run)]
    assert json.loads((out / "pareto.json").read_text()) == json.loads((qat_run / "pareto.json").read_text())


@pytest.mark.usefixtures("_restore_logging")
@pytest.mark.parametrize(
    ("args", "fragment", "code"),
    [
        (["--preset", "huge"], "huge", 2),
        (["--beta-end", "-1e-6"], "beta_end=-1e-06", 1),
        (["--beta-start", "1e-4", "--beta-end", "1e-6"], "beta_end must not be below", 1),
        (["--phi", "3,x"], "'3,x'", 1),
        (["--select", "best"], "best", 2),
    ],
)
def test_cli_bad_options_are_one_line(sim_file, tmp_path, args, fragment, code):
    result = CliRunner().invoke(main, ["qat", str(sim_file), "-o", str(tmp_path / "r"), *args])
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert fragment in lines[0]
    assert not (tmp_path / "r").exists()
