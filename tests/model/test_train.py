from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import yaml
from tests.conftest import TINY_TRAIN, set_cell

from calohls.config import QATConfig, TrainConfig
from calohls.data.hdf5 import read_clusters
from calohls.errors import DataError, FileExistsRefusedError, InputFileError, SchemaError
from calohls.model.prepare import split_events
from calohls.model.run_folder import load_run, open_run
from calohls.model.train import train


def test_run_folder_contents(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {"run.json", "config.yaml", "model.keras", "features.json", "split.npz", "history.json",
            "closure.json"} <= names  # fmt: skip
    assert {p.name for p in (trained_run / "checkpoints").iterdir()} == {"best.keras", "last.keras"}
    info = load_run(trained_run).record
    assert info["stage"] == "train"
    assert info["versions"]["keras"].startswith("3.")
    assert sum(info["sizes"].values()) == info["data"]["clusters"]
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["model"]["preset"] == "tiny"
    assert config["seed"] == 3
    history = json.loads((trained_run / "history.json").read_text())
    assert len(history) == info["epochs"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert not list(trained_run.parent.glob(".*partial*"))


def test_em_head_trains_beside_the_energy_and_stays_out_of_the_saved_model(sim_file, tmp_path):
    config = TrainConfig.model_validate({**TINY_TRAIN, "epochs": 4, "max_clusters": 3000, "em_weight": 0.3})
    trained_run = tmp_path / "em"
    train(sim_file, trained_run, config)
    history = json.loads((trained_run / "history.json").read_text())
    # loss and val_loss are the energy regression's; the classification and the sum are logged beside them
    for row in history:
        assert {"loss", "val_loss", "em_loss", "val_em_loss", "total_loss", "val_total_loss"} <= set(row)
        assert row["total_loss"] > row["loss"]
    assert history[-1]["val_em_loss"] < history[0]["val_em_loss"]  # it learns to tell π0 from π±
    run = open_run(trained_run)
    assert len(run.model.outputs) == 1  # the deployed network has the energy output only
    assert "em_probability" not in [layer.name for layer in run.model.layers]
    info = load_run(trained_run).record
    assert info["best_val_loss"] == pytest.approx(min(r["val_loss"] for r in history))
    assert info["convergence"]["epoch_cap"] == 4
    assert isinstance(info["converged"], bool)


def test_without_the_em_head_only_the_energy_is_fitted(sim_file, tmp_path):
    config = TrainConfig.model_validate({**TINY_TRAIN, "epochs": 2, "max_clusters": 2000})
    assert config.em_weight == 0  # the default: the head did not help (docs/physics.md, ablation)
    train(sim_file, tmp_path / "run", config)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert "em_loss" not in history[0]
    assert len(open_run(tmp_path / "run").model.outputs) == 1


def test_the_loss_option_reaches_keras():
    from calohls.model.train import _compiled

    for loss in ("mse", "mae"):
        _, trainer = _compiled(TrainConfig.model_validate({**TINY_TRAIN, "loss": loss}), output_mean=0.0)
        assert trainer.loss == loss
    _, trainer = _compiled(TrainConfig.model_validate({**TINY_TRAIN, "loss": "huber"}), output_mean=0.0)
    assert trainer.loss.get_config()["name"] == "huber_loss"
    assert trainer.loss._fn_kwargs == {"delta": 0.05}
    with pytest.raises(ValueError, match="loss"):
        QATConfig.model_validate({"loss": "mae"})  # QAT fits MSE + beta x EBOPs only


def test_train_fraction_keeps_validation_and_test_whole(sim_file, tmp_path):
    base = {**TINY_TRAIN, "epochs": 1, "max_clusters": 3000, "em_weight": 0}
    train(sim_file, tmp_path / "all", TrainConfig.model_validate(base))
    train(sim_file, tmp_path / "half", TrainConfig.model_validate({**base, "train_fraction": 0.5}))
    full, half = (np.load(tmp_path / name / "split.npz") for name in ("all", "half"))
    np.testing.assert_array_equal(full["test"], half["test"])
    np.testing.assert_array_equal(full["val"], half["val"])
    assert set(half["train"]) < set(full["train"])
    assert half["train"].size == round(0.5 * full["train"].size)


def test_split_is_by_event_and_reproducible(trained_run, sim_file):
    split = np.load(trained_run / "split.npz")
    event = read_clusters(sim_file)["event"][split["index"]]
    sets = {k: set(event[split[k]].tolist()) for k in ("train", "val", "test")}
    assert not (sets["train"] & sets["test"])
    assert not (sets["train"] & sets["val"])
    again = split_events(event, 3, 0.15, 0.15)
    for k in ("train", "val", "test"):
        np.testing.assert_array_equal(again[k], split[k])
    assert 0.1 < split["test"].size / split["index"].size < 0.2


def test_tiny_model_beats_the_em_scale(trained_run, sim_file):
    run = open_run(trained_run)
    batch = read_clusters(sim_file).select(run.file_index("test"))
    e_pred = run.predict(batch)

    def resolution(e):
        q16, q50, q84 = np.percentile(e / batch["e_true"], [16, 50, 84])
        return (q84 - q16) / q50

    assert resolution(e_pred) < 0.8 * resolution(batch["e_em"])
    assert abs(np.median(e_pred / batch["e_true"]) - 1) < 0.05


def test_same_seed_same_training(sim_file, tmp_path):
    config = TrainConfig.model_validate({**TINY_TRAIN, "epochs": 2, "max_clusters": 2000})
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        train(sim_file, run, config)
    histories = [json.loads((r / "history.json").read_text()) for r in runs]
    assert histories[0] == histories[1]


def test_refuses_to_overwrite_a_run(trained_run, sim_file):
    with pytest.raises(FileExistsRefusedError, match="--overwrite"):
        train(sim_file, trained_run, TrainConfig.model_validate(TINY_TRAIN))


def test_overwrite_replaces_the_run(sim_file, tmp_path):
    config = TrainConfig.model_validate({**TINY_TRAIN, "epochs": 1, "max_clusters": 1500})
    run = tmp_path / "r"
    train(sim_file, run, config)
    (run / "marker").write_text("old")
    train(sim_file, run, config, overwrite=True)
    assert not (run / "marker").exists()
    assert load_run(run).record["epochs"] == 1


def test_bad_inputs(sim_file, tmp_path):
    with pytest.raises(DataError, match=r"training clusters for batch_size=100000"):
        train(sim_file, tmp_path / "r1", TrainConfig.model_validate({**TINY_TRAIN, "batch_size": 100_000}))
    assert not (tmp_path / "r1").exists()
    stripped = tmp_path / "stripped.h5"
    stripped.write_bytes(sim_file.read_bytes())
    with h5py.File(stripped, "a") as f:
        del f["clusters/e_true"]
    with pytest.raises(SchemaError, match="e_true"):
        train(stripped, tmp_path / "r2", TrainConfig.model_validate(TINY_TRAIN))
    with pytest.raises(InputFileError, match="not found"):
        train(tmp_path / "none.h5", tmp_path / "r3", TrainConfig.model_validate(TINY_TRAIN))
    nan = tmp_path / "nan.h5"
    nan.write_bytes(sim_file.read_bytes())
    with h5py.File(nan, "a") as f:
        set_cell(f, 5, 0, "e", np.nan)
    with pytest.raises(DataError, match="non-finite"):
        train(nan, tmp_path / "r4", TrainConfig.model_validate(TINY_TRAIN))


def test_load_run_rejects_other_folders(tmp_path, trained_run):
    with pytest.raises(InputFileError, match="not found"):
        load_run(tmp_path / "missing")
    with pytest.raises(InputFileError, match="not a calohls run folder"):
        load_run(tmp_path)
    with pytest.raises(InputFileError, match="stage 'train', not 'qat'"):
        load_run(trained_run, "qat")


def test_every_epoch_is_reported_to_on_epoch(sim_file, tmp_path):
    config = TrainConfig.model_validate({**TINY_TRAIN, "epochs": 2, "max_clusters": 2000})
    heard = []
    result = train(sim_file, tmp_path / "run", config, on_epoch=heard.append)
    # after the epochs, the start of every closure round (reported at the last epoch)
    rounds = [e for e in heard if "closure_round" in e.logs]
    heard = [e for e in heard if "closure_round" not in e.logs]
    assert [e.logs["closure_round"] for e in rounds] == list(range(1, len(result.closure.rounds) + 1))
    assert all(e.epoch == result.epochs for e in rounds)
    assert [e.epoch for e in heard] == list(range(1, result.epochs + 1))
    assert all(e.epochs == 2 and {"loss", "val_loss"} <= set(e.logs) for e in heard)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [e.logs["val_loss"] for e in heard] == pytest.approx([r["val_loss"] for r in history])
