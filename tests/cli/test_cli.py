from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from calohls import __version__
from calohls.cli import main
from calohls.data.schema import PARTICLES, SCHEMA_VERSION

#: A tiny but complete simulation: one batch, simulated in this process.
TINY = ["--events", "300", "--seed", "3", "--workers", "1", "--hide-progress"]


@pytest.fixture(autouse=True)
def _logging(_restore_logging):
    """Every test here runs the CLI."""


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result: Result, *fragments: str, code: int = 1) -> str:
    """The command failed with ``code`` and said so on one stderr line containing every fragment."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


# -- the command surface -------------------------------------------------------------------------------------


def test_version():
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"calohls {__version__}"


@pytest.mark.parametrize("command", [[], ["simulate"], ["inspect"], ["convert"]])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(command, flag):
    result = run(*command, flag)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage: ")


def test_every_command_has_help():
    for name in main.commands:
        result = run(name, "--help")
        assert result.exit_code == 0, name
        assert "Usage: " in result.stdout


def test_no_command_shows_help():
    result = run()
    assert "Usage: " in result.output
    assert "simulate" in result.output


# -- option errors: one line, naming the value and the fix ---------------------------------------------------


@pytest.mark.parametrize("events", ["0", "-5"])
def test_simulate_rejects_non_positive_events(events, tmp_path):
    result = run("simulate", "--events", events, "-o", tmp_path / "c.h5")
    assert_one_line_error(result, f"events={events}", "greater than 0")
    assert not (tmp_path / "c.h5").exists()


def test_simulate_rejects_unknown_particle(tmp_path):
    result = run("simulate", "--particles", "pi+,kaon", "-o", tmp_path / "c.h5")
    assert_one_line_error(result, "'kaon'", ", ".join(PARTICLES))


def test_simulate_rejects_empty_energy_range(tmp_path):
    result = run("simulate", "--e-min", "10", "--e-max", "1", "-o", tmp_path / "c.h5")
    assert_one_line_error(result, "e_min=10.0", "e_max=1.0")


def test_simulate_rejects_missing_config_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    result = run("simulate", "--config", missing, "-o", tmp_path / "c.h5")
    assert_one_line_error(result, str(missing), "not found")


def test_simulate_rejects_unknown_config_key(tmp_path):
    config = tmp_path / "sim.yaml"
    config.write_text("events: 10\ncolour: blue\n")
    result = run("simulate", "--config", config, "-o", tmp_path / "c.h5")
    assert_one_line_error(result, "colour")


def test_simulate_usage_errors_are_one_line(tmp_path):
    assert_one_line_error(run("simulate", "--workers", "0", "-o", tmp_path / "c.h5"), "--workers", "0", code=2)
    assert_one_line_error(run("simulate", "--events", "many", "-o", tmp_path / "c.h5"), "'many'", code=2)
    assert_one_line_error(run("simulate", "--events", "10"), "--output", "simulate --help", code=2)
    assert_one_line_error(run("simulate", "--bogus"), "--bogus", code=2)
    assert_one_line_error(run("bogus"), "bogus", code=2)


def test_simulate_refuses_existing_output(tmp_path):
    out = tmp_path / "c.h5"
    out.write_bytes(b"keep me")
    result = run("simulate", *TINY, "-o", out)
    assert_one_line_error(result, str(out), "--overwrite")
    assert out.read_bytes() == b"keep me"


def test_inspect_missing_file(tmp_path):
    missing = tmp_path / "none.h5"
    assert_one_line_error(run("inspect", missing), str(missing))


def test_inspect_corrupt_file(tmp_path):
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"this is not an HDF5 file\n" * 10)
    assert_one_line_error(run("inspect", corrupt), str(corrupt))


def test_inspect_rejects_unknown_quantile_pair(tmp_path):
    assert_one_line_error(run("inspect", tmp_path / "x.h5", "--quantiles", "10-90"), "10-90", code=2)


def test_verbose_logs_to_stderr(tmp_path):
    out = tmp_path / "c.h5"
    out.write_bytes(b"keep me")
    result = run("-v", "simulate", *TINY, "-o", out)
    assert result.exit_code == 1
    assert "INFO calohls.cli.simulate: simulation options" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: output")
    assert result.stdout == ""


def test_unexpected_errors_are_one_line_unless_verbose(tmp_path, monkeypatch):
    import calohls.physics.summary

    def broken(*args, **kwargs):
        raise RuntimeError("something broke")

    monkeypatch.setattr(calohls.physics.summary, "summarize_file", broken)
    quiet = run("inspect", tmp_path / "x.h5")
    assert_one_line_error(quiet, "unexpected RuntimeError: something broke", "--verbose")
    verbose = run("-v", "inspect", tmp_path / "x.h5")
    assert verbose.exit_code == 1
    assert isinstance(verbose.exception, RuntimeError)


# -- simulate → inspect, end to end --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> tuple[Path, Result]:
    out = tmp_path_factory.mktemp("sim") / "clusters.h5"
    result = run("simulate", *TINY, "-o", out)
    return out, result


def test_simulate_writes_file_and_reports(tiny_file):
    out, result = tiny_file
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert result.stdout.startswith("wrote ")
    assert str(out) in result.stdout
    assert "clusters/s" in result.stdout


def test_inspect_json(tiny_file):
    out, _ = tiny_file
    result = run("inspect", out, "--json")
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["path"] == str(out)
    assert s["schema_version"] == SCHEMA_VERSION
    assert s["max_cells"] == 256
    assert s["n_clusters"] > 0
    assert 0 < s["n_events"] <= 300
    assert set(s["particles"]) <= {"pi+", "pi-", "pi0"}
    assert sum(p["clusters"] for p in s["particles"].values()) == s["n_clusters"]
    assert 0 <= s["truncated"]["clusters"] <= s["n_clusters"]
    for field in ("e_true", "e_em", "e_particle"):
        r = s["energy"][field]
        assert r["min"] <= r["median"] <= r["max"]
    assert 0.5 <= s["energy"]["e_particle"]["min"] <= s["energy"]["e_particle"]["max"] <= 500.0
    response = s["response"]
    assert response["quantity"] == "e_em / e_true"
    assert response["resolution_label"] == "IQR(16–84%)/median"
    assert set(response["groups"]) <= {"pi0", "pi+-"}
    assert response["groups"]
    for group in response["groups"].values():
        assert len(group["edges"]) == 10  # 0.5-500 GeV, 3 bins per decade
        for key in ("centres", "counts", "median", "q_lo", "q_hi", "resolution"):
            assert len(group[key]) == 9
        filled = [m for m, c in zip(group["median"], group["counts"], strict=True) if c >= group["min_count"]]
        assert all(m is not None and m > 0 for m in filled)
    assert s["config"]["events"] == 300
    assert s["config"]["seed"] == 3


def test_inspect_tables(tiny_file):
    out, _ = tiny_file
    result = run("inspect", out, "--per-decade", "2", "--quantiles", "25-75")
    assert result.exit_code == 0, result.output
    assert f"schema version {SCHEMA_VERSION}" in result.stdout
    assert "Clusters per particle" in result.stdout
    assert "IQR(25–75%)/median" in result.stdout


def test_inspect_config_round_trips_into_simulate(tiny_file, tmp_path):
    out, _ = tiny_file
    result = run("inspect", out, "--config")
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(result.stdout)
    assert config["events"] == 300
    assert config["seed"] == 3
    as_json = run("inspect", out, "--config", "--json")
    assert json.loads(as_json.stdout) == config
    # The printed config is a valid --config for simulate (here rejected only for the existing output).
    path = tmp_path / "sim.yaml"
    path.write_text(result.stdout)
    again = run("simulate", "--config", path, "--hide-progress", "-o", out)
    assert_one_line_error(again, "--overwrite")


# -- users' ROOT files ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def root_file(tiny_file, tmp_path_factory) -> Path:
    from calohls.data.hdf5 import read_clusters
    from calohls.data.root import write_mltree

    out = tmp_path_factory.mktemp("root") / "mltree.root"
    write_mltree(out, read_clusters(tiny_file[0]))
    return out


def test_inspect_reads_mltree_root(root_file, tiny_file):
    result = run("inspect", root_file, "--json")
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["format"] == "root"
    assert s["n_clusters"] == json.loads(run("inspect", tiny_file[0], "--json").stdout)["n_clusters"]
    assert "MLTree ROOT" in run("inspect", root_file).stdout


def test_convert_root_to_hdf5(root_file, tmp_path):
    out = tmp_path / "converted.h5"
    result = run("convert", root_file, "-o", out, "--max-cells", "32", "--hide-progress")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("wrote ")
    s = json.loads(run("inspect", out, "--json").stdout)
    assert s["max_cells"] == 32
    assert s["config"]["inputs"][0]["path"].endswith("mltree.root")
    assert_one_line_error(run("convert", root_file, "-o", out, "--hide-progress"), str(out), "--overwrite")


FIXTURES = Path(__file__).parents[1] / "data" / "fixtures"


def test_convert_root_written_mltree_files_into_one(tmp_path):
    v1, v2, geo = FIXTURES / "mltree_v1.root", FIXTURES / "mltree_v2_events.root", FIXTURES / "mltree_v2_geo.root"
    out = tmp_path / "both.h5"
    result = run("convert", v1, v2, "--geometry", geo, "-o", out, "--step-size", "50kB", "--hide-progress")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"wrote 334 clusters (220 events, 2 files) to {out}")
    assert "ENG_CALIB_TOT <= 0" in result.stdout
    assert any("+ cluster_cell_hitsE_Escaped (1 file)" in line for line in lines)
    s = json.loads(run("inspect", out, "--json").stdout)
    assert s["n_clusters"] == 334
    assert 1.0 < s["energy"]["e_em"]["median"] < 200.0  # GeV, with the default branch map
    assert 0.85 < s["hit_coverage"]["median"] < 1.0
    assert [i["entries"] for i in s["config"]["inputs"]] == [120, 100]
    sel = run("convert", v1, "-o", tmp_path / "sel.h5", "--select", "truth_matched", "--select", "e_em>2")
    assert sel.exit_code == 0, sel.output
    assert "by truth_matched" in sel.stdout
    assert "by e_em>2" in sel.stdout
    text = run("inspect", v2, "--geometry", geo).stdout
    assert "cell calibration hits cover a median 1.000 of ENG_CALIB_TOT" in text


def test_convert_many_inputs_errors_are_one_line(tmp_path):
    v1, v2 = FIXTURES / "mltree_v1.root", FIXTURES / "mltree_v2_events.root"
    out = tmp_path / "o.h5"
    assert_one_line_error(run("convert", v1, tmp_path / "gone.root", "-o", out), "gone.root", "not found")
    assert_one_line_error(run("convert", v1, v2, "-o", out), str(v2), "--geometry")
    assert_one_line_error(run("convert", v1, "-o", out, "--select", "e>1"), "e>1", "unknown quantity")
    assert_one_line_error(run("convert", v1, "-o", out, "--step-size", "lots"), "lots", "100MB")
    assert_one_line_error(run("convert", str(tmp_path / "*.root"), "-o", out), "no file matches")
    mev = tmp_path / "mev.yaml"
    mev.write_text("energy_scale: 1.0e-3\n")
    assert_one_line_error(run("convert", v1, "--branch-map", mev, "-o", out), "energy_scale: 1 ", "--no-unit-check")
    assert not out.exists()
    skipped = run("convert", v1, v2, "-o", out, "--skip-bad", "--hide-progress")
    assert skipped.exit_code == 0, skipped.output
    assert f"skipped {v2}" in skipped.stdout
    forced = run("convert", v1, "--branch-map", mev, "--no-unit-check", "-o", tmp_path / "mev.h5")
    assert forced.exit_code == 0, forced.output


def test_convert_errors_are_one_line(root_file, tiny_file, tmp_path):
    assert_one_line_error(run("convert", tmp_path / "none.root", "-o", tmp_path / "o.h5"), "not found")
    assert_one_line_error(run("convert", tiny_file[0], "-o", tmp_path / "o.h5"), "is not a ROOT file")
    bad_map = tmp_path / "map.yaml"
    bad_map.write_text("cell_energy: E\n")
    assert_one_line_error(run("convert", root_file, "--branch-map", bad_map, "-o", tmp_path / "o.h5"), "cell_energy")
    truncated = tmp_path / "cut.root"
    truncated.write_bytes(root_file.read_bytes()[: root_file.stat().st_size // 2])
    assert_one_line_error(run("convert", truncated, "-o", tmp_path / "o.h5"), "cut.root")
    assert not (tmp_path / "o.h5").exists()


# -- train and evaluate --------------------------------------------------------------------------------------


def test_train_and_evaluate_errors_are_one_line(sim_file, trained_run, tmp_path):
    assert_one_line_error(run("train", sim_file, "-o", tmp_path / "r", "--phi", "3,x"), "'3,x'")
    assert_one_line_error(run("train", sim_file, "-o", tmp_path / "r", "--preset", "huge"), "huge", code=2)
    assert_one_line_error(
        run("train", sim_file, "-o", tmp_path / "r", "--batch-size", "100000", "--hide-progress"), "--batch-size"
    )
    assert_one_line_error(run("train", sim_file, "-o", trained_run), "--overwrite")
    assert_one_line_error(run("train", tmp_path / "none.h5", "-o", tmp_path / "r"), "not found")
    assert_one_line_error(run("evaluate", tmp_path), "not a calohls run folder")
    assert_one_line_error(run("evaluate", tmp_path / "nothing"), "not found")


def test_train_then_evaluate(sim_file, tmp_path):
    out = tmp_path / "run"
    result = run("train", sim_file, "-o", out, "--preset", "tiny", "--max-cells", "16", "--epochs", "2",
                 "--max-clusters", "3000", "--hide-progress")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("trained (8, 8)→(8,)")
    # the closure rounds say what they did, or why there were none (3,000 clusters may hold too few π0)
    assert "closed π0 and π± medians above 2 GeV in" in result.stdout or (
        "no closure per particle type: too few training clusters" in result.stdout
    )
    result = run("evaluate", out)
    assert result.exit_code == 0, result.output
    assert "π±: median response" in result.stdout
    assert (out / "eval" / "metrics.json").is_file()


@pytest.mark.parametrize("command", ["train", "qat"])
def test_help_states_the_config_defaults(command):
    """The [default: …] of the shared options is the config's (they once said 80 epochs and 32 cells)."""
    from calohls.config import QATConfig, TrainConfig

    config = TrainConfig() if command == "train" else QATConfig()
    text = " ".join(CliRunner().invoke(main, [command, "--help"], terminal_width=400).output.split())
    for option, value in (
        ("--max-cells INTEGER", config.model.max_cells),
        ("--epochs INTEGER", config.epochs),
        ("--batch-size INTEGER", config.batch_size),
        ("--seed INTEGER", config.seed),
    ):
        first_default = text.split(option, 1)[1].split("[default: ", 1)[1].split("]", 1)[0]
        assert first_default == str(value), option
    widths = ",".join(map(str, config.model.phi_widths))
    assert f"e.g. {widths} (overrides the preset)" in text
