from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from calohls.cli import main
from calohls.config import PTQConfig
from calohls.errors import FileExistsRefusedError, InputFileError
from calohls.plots.evaluation import draw_evaluation
from calohls.report import collect_study, write_report
from calohls.report.render import value_with_error
from calohls.stages.evaluate import evaluate_and_write
from calohls.stages.ptq import run_ptq

#: A tiny PTQ sweep (three points) of the test run.
SMALL_PTQ = {"sweeps": ("int-bits",), "total_bits": 12, "int_bits": (4, 6), "clusters": 300, "trace_clusters": 60,
             "workers": 1}  # fmt: skip
ANSWER = "Not bigger: the tiny QAT design at β = 1e-7 matches the float resolution within 3 % in 12,345 LUTs."
FIRMWARE = {
    "tiny_b1e-07": {"clusters_checked": 1000, "differing": {"hls": 0, "rtl": 0}, "bit_exact": True,
                    "resources": {"LUT": 12345, "FF": 2345, "CARRY": 345, "DSP": 0, "BRAM": 0},
                    "estimate": {"LUT": 12001, "FF": 2299}, "latency": {"cycles": 7, "ns": 17.5}, "ii": 1,
                    "clock_period": 2.5},
    "tiny_b1e-06": {"clusters_checked": 1000, "differing": {"hls": 0, "rtl": 3}, "bit_exact": False,
                    "resources": {"LUT": 6789, "FF": 1234, "CARRY": 99, "DSP": 0, "BRAM": 0},
                    "estimate": {"LUT": 7003}, "latency": {"cycles": 5, "ns": 12.5}, "ii": 1, "clock_period": 2.5},
}  # fmt: skip
PARETO = [
    {"epoch": 12, "val_loss": 0.0231, "ebops": 40321.0, "beta": 1e-7, "file": "checkpoints/e012.keras",
     "selected": False},
    {"epoch": 31, "val_loss": 0.0244, "ebops": 18811.0, "beta": 1e-7, "file": "checkpoints/e031.keras",
     "selected": True},
]  # fmt: skip
POINTS = [
    {"key": "tiny", "kind": "float", "preset": "tiny", "precision": "float32", "beta": None, "resolution": 0.2012,
     "mpe": 0.0, "ebops": None, "lut": None, "ff": None, "dsp": None, "latency_ns": None, "pareto": False,
     "resolution_bins": [0.9, 0.5, 0.3]},
    {"key": "tiny|ptq|ap_fixed<12,5>", "kind": "ptq", "preset": "tiny", "precision": "ap_fixed<12,5>", "beta": None,
     "resolution": 0.3341, "mpe": 13.4996, "ebops": 95123.0, "lut": 41234, "ff": 5120, "dsp": 3, "latency_ns": 22.5,
     "pareto": False, "resolution_bins": [1.0, 0.6, 0.4]},
    {"key": "tiny_b1e-07", "kind": "qat", "preset": "tiny", "precision": "HGQ2", "beta": 1e-7, "resolution": 0.2071,
     "mpe": 2.9, "ebops": 18811.0, "lut": 12345, "ff": 2345, "dsp": 0, "latency_ns": 17.5, "pareto": True,
     "resolution_bins": [0.9, 0.5, 0.3]},
]  # fmt: skip
STUDY_CONFIG = "presets:\n- tiny\nlut_budget: 34560\nlatency_budget_ns: 50.0\n"


# -- helpers ----------------------------------------------------------------------------------------------------


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1))


def _draw(path: Path, xs: list[float], ys: list[float], label: str) -> None:
    """A small real figure (distinct content for each call)."""
    from calohls.plots.style import new_figure, save, style_context

    with style_context():
        fig, ax = new_figure(figsize=(4, 3))
        ax.plot(xs, ys, marker="o", label=label)
        ax.set_xlabel("LUT")
        ax.set_ylabel("resolution")
        ax.legend()
        save(fig, path, dpi=60)


def _add_qat_run(study: Path, float_run: Path) -> Path:
    """A QAT run folder of the agreed layout, made from the float run's files (stage qat, Pareto checkpoints)."""
    run = study / "qat" / "tiny_b1e-07"
    run.mkdir(parents=True)
    info = json.loads((float_run / "run.json").read_text())
    _write_json(run / "run.json", {**info, "stage": "qat", "model": {"name": "deepsets_qat_8x8_8", "parameters": 281}})
    shutil.copy(float_run / "config.yaml", run / "config.yaml")
    history = json.loads((float_run / "history.json").read_text())
    _write_json(run / "history.json", [{**row, "ebops": 5e4 / row["epoch"], "beta": 1e-7} for row in history])
    _write_json(run / "pareto.json", PARETO)
    (run / "eval").mkdir()
    shutil.copy(float_run / "eval" / "metrics.json", run / "eval" / "metrics.json")
    _draw(run / "eval" / "pareto_checkpoints.png", [p["ebops"] for p in PARETO], [p["val_loss"] for p in PARETO], "QAT")
    return run


def _add_firmware_and_scan(study: Path) -> None:
    for name, info in FIRMWARE.items():
        _write_json(study / "firmware" / name / "firmware.json", info)
    scan = study / "scan"
    scan.mkdir()
    (scan / "points.jsonl").write_text("".join(json.dumps(p) + "\n" for p in POINTS))
    _write_json(
        scan / "answer.json", {"answer": ANSWER, "details": ["float tiny: resolution 0.201", "PTQ costs 3 DSP"]}
    )
    quantized = [p for p in POINTS if p["lut"] is not None]
    _draw(scan / "pareto_front.png", [p["lut"] for p in quantized], [p["resolution"] for p in quantized], "designs")
    _draw(scan / "qat_vs_ptq.png", [1.0, 2.0, 3.0], [0.3, 0.25, 0.21], "QAT vs PTQ")


@pytest.fixture(scope="module")
def study(sim_file, trained_run, tmp_path_factory) -> Path:
    """A small study folder of every stage: real data, training, evaluation and PTQ; hand-made QAT, firmware and
    scan outputs of the agreed schemas; a stray figure that belongs to no stage."""
    root = tmp_path_factory.mktemp("report") / "study"
    (root / "data").mkdir(parents=True)
    shutil.copy(sim_file, root / "data" / "clusters.h5")
    run = root / "runs" / "tiny"
    shutil.copytree(trained_run, run)
    draw_evaluation(evaluate_and_write(run), run / "eval")
    run_ptq([run], root / "ptq", PTQConfig.model_validate(SMALL_PTQ))
    _add_qat_run(root, run)
    _add_firmware_and_scan(root)
    _write_json(root / "study.json", {"kind": "calohls-study", "config": {"presets": ["tiny"]}, "stages": {}})
    (root / "config.yaml").write_text(STUDY_CONFIG)
    _draw(root / "data" / "energies.png", [1.0, 10.0], [5.0, 2.0], "stray")
    return root


@pytest.fixture(scope="module")
def report(study, tmp_path_factory) -> tuple[Path, str]:
    out = write_report(study, tmp_path_factory.mktemp("html") / "report.html")
    return out, out.read_text(encoding="utf-8")


def _pngs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.png") if not any(part.startswith(".") for part in p.parts))


def _img_sources(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]*)"', html)


# -- contents ---------------------------------------------------------------------------------------------------


def test_every_figure_appears_once_as_an_embedded_image(study, report):
    _, html = report
    pngs = _pngs(study)
    assert len(pngs) >= 9 + 3 + 1 + 2 + 1  # evaluation, PTQ, QAT, scan and the stray one
    sources = _img_sources(html)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    embedded = [base64.b64decode(s.split(",", 1)[1]) for s in sources]
    for png in pngs:
        assert embedded.count(png.read_bytes()) == 1, png
    history_plots = 2  # drawn by the report for the float and the QAT run
    assert len(sources) == len(pngs) + history_plots
    assert all(e.startswith(b"\x89PNG\r\n\x1a\n") for e in embedded)


def test_sections_hold_the_stage_results(study, report):
    _, html = report
    assert ANSWER in html
    assert "PTQ costs 3 DSP" in html
    ptq = json.loads((study / "ptq" / "summary.json").read_text())
    for finding in ptq["findings"]:
        assert _escaped(finding) in html
    metrics = json.loads((study / "runs" / "tiny" / "eval" / "metrics.json").read_text())
    table = metrics["tables"]["all"]["deepsets"]
    first = next(i for i, m in enumerate(table["median"]) if m is not None)
    assert value_with_error(table["median"][first], table["median_err"][first]) in html
    clusters = json.loads((study / "runs" / "tiny" / "run.json").read_text())["data"]["clusters"]
    assert f"<th>clusters in the data</th><td>{clusters:,}</td>" in html
    # the Pareto checkpoints, the selected one highlighted
    assert "checkpoints/e031.keras" in html
    assert re.search(r'<tr class="marked">(?:(?!</tr>).)*checkpoints/e031\.keras', html, re.S)
    assert not re.search(r'<tr class="marked">(?:(?!</tr>).)*checkpoints/e012\.keras', html, re.S)
    # scan points: numbers formatted, nested columns left out, the Pareto point highlighted
    assert "41,234" in html
    assert "13.5" in html
    assert "resolution_bins" in html
    assert "[0.9, 0.5, 0.3]" not in html
    assert re.search(r'<tr class="marked">(?:(?!</tr>).)*tiny_b1e-07', html, re.S)


def test_firmware_table(report):
    _, html = report
    table = html[html.index('id="firmware"') : html.index('id="scan"')]
    for text in ("tiny_b1e-07", "12,345", "2,345", "17.5", "tiny_b1e-06", "6,789", "12.5", "0 / 3"):
        assert text in table, text
    assert table.count('<span class="yes">yes</span>') == 1
    assert table.count('<span class="no">no</span>') == 1


def test_configs_and_versions(study, trained_run, report):
    _, html = report
    assert "lut_budget: 34560" in html  # the study's config.yaml
    assert _escaped((study / "runs" / "tiny" / "config.yaml").read_text()) in html
    assert "ptq/ptq.yaml" in html
    assert "generating config" in html  # the cluster file's simulation config
    versions = json.loads((trained_run / "run.json").read_text())["versions"]
    table = html[html.index('id="versions"') :]
    for package, display in (("calohls", "calohls"), ("hls4ml", "hls4ml"), ("hgq2", "HGQ2"), ("da4ml", "da4ml"),
                             ("keras", "Keras"), ("jax", "JAX")):  # fmt: skip
        assert re.search(rf"<td>{display}</td><td><code>{re.escape(versions[package])}</code>", table), package
    assert re.search(r"report made \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", html)


def test_the_page_is_self_contained(report):
    _, html = report
    assert "<script" not in html
    assert "<link" not in html
    assert "@import" not in html
    assert "url(" not in html
    assert not re.findall(r'(?:src|href)="(?!data:image/png;base64,|#)', html)


def _escaped(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&#34;").replace("'", "&#39;")
    )


# -- partial studies, bad inputs ----------------------------------------------------------------------------------


def test_a_folder_of_runs_only(study, tmp_path):
    html = write_report(study / "runs", tmp_path / "runs.html").read_text()
    for pngs in _pngs(study / "runs"):
        assert base64.b64encode(pngs.read_bytes()).decode() in html
    assert "scan not run" in html
    for stage in ("PTQ", "QAT", "Firmware", "Scan"):
        assert f"<strong>{stage}: not run</strong>" in html, stage
    assert "Float training: not run" not in html
    assert "clusters.h5" in html  # the data the run was trained on, found through run.json


def test_text_from_the_folder_is_escaped(tmp_path):
    run = tmp_path / "study" / "runs" / "<b>x"
    _write_json(run / "run.json", {"kind": "calohls-run", "stage": "train", "model": {"name": "<b>x</b>"}})
    _write_json(run / "history.json", [{"epoch": 1, "loss": 0.3, "val_loss": 0.4}, {"epoch": 2, "loss": 0.2}])
    _write_json(tmp_path / "study" / "scan" / "answer.json", {"answer": "<script>alert(1)</script> & more"})
    html = write_report(tmp_path / "study", tmp_path / "r.html").read_text()
    assert "<b>x" not in html
    assert "<script>" not in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert "runs/&lt;b&gt;x" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert "<strong>Evaluation: not run</strong>" in html


def test_corrupt_artefacts_become_warnings(tmp_path):
    root = tmp_path / "study"
    _write_json(root / "runs" / "a" / "run.json", {"kind": "calohls-run", "stage": "train", "epochs": 3})
    (root / "runs" / "a" / "eval").mkdir()
    (root / "runs" / "a" / "eval" / "metrics.json").write_text('{"tables": ')
    (root / "firmware" / "f").mkdir(parents=True)
    (root / "firmware" / "f" / "firmware.json").write_text("not json")
    (root / "scan").mkdir()
    (root / "scan" / "points.jsonl").write_text(json.dumps(POINTS[0]) + "\n{broken\n")
    html = write_report(root, tmp_path / "r.html").read_text()
    assert "runs/a/eval/metrics.json: cannot read it as JSON" in html
    assert "firmware/f/firmware.json: cannot read it as JSON" in html
    assert "scan/points.jsonl: 1 unreadable line(s) left out (line 2 first)" in html
    assert "3 problems reading the study" in html
    assert "float32" in html  # the readable point is still shown
    study = collect_study(root)
    assert study.runs[0].info["epochs"] == 3
    assert study.runs[0].metrics is None


def test_refuses_to_overwrite(report, study):
    out, html = report
    with pytest.raises(FileExistsRefusedError, match="--overwrite"):
        write_report(study, out)
    assert out.read_text(encoding="utf-8") == html
    copy = out.with_name("copy.html")
    copy.write_text("old")
    write_report(study / "scan", copy, overwrite=True)
    assert ANSWER in copy.read_text()


def test_a_folder_without_calohls_outputs(tmp_path):
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    (tmp_path / "empty" / "notes" / "readme.txt").write_text("hello")
    with pytest.raises(InputFileError, match=r"holds nothing calohls made; expected study\.json"):
        write_report(tmp_path / "empty", tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
    with pytest.raises(InputFileError, match="not found"):
        write_report(tmp_path / "missing", tmp_path / "r.html")


def test_command_line(study, tmp_path):
    result = CliRunner().invoke(main, ["report", str(study / "scan"), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"wrote {tmp_path / 'r.html'}")
    again = CliRunner().invoke(main, ["report", str(study / "scan"), "-o", str(tmp_path / "r.html")])
    assert again.exit_code == 1
    assert again.stderr.strip().splitlines() == [f"error: output {tmp_path / 'r.html'} exists; choose another path or "
                                                 "pass --overwrite to replace it"]  # fmt: skip
    (tmp_path / "empty").mkdir()
    empty = CliRunner().invoke(main, ["report", str(tmp_path / "empty"), "-o", str(tmp_path / "e.html")])
    assert empty.exit_code == 1
    assert len(empty.stderr.strip().splitlines()) == 1
    assert "holds nothing calohls made" in empty.stderr


# -- in a real browser --------------------------------------------------------------------------------------------

#: Appended to a copy of the report: after loading, write how many images decoded into the page.
_COUNT_IMAGES = """<script>
window.addEventListener("load", function () {
  var images = Array.from(document.images);
  var decoded = images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var p = document.createElement("p");
  p.id = "image-check";
  p.textContent = "decoded " + decoded + " of " + images.length;
  document.body.appendChild(p);
});
</script>"""


def chromium() -> str:
    """The Chromium executable; a missing one fails the test (CI installs it with apt-get)."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    pytest.fail("Chromium not found on PATH; install it (apt-get install chromium) to run the browser test")


def _headless(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
               f"--user-data-dir={profile}", *args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_the_report_renders_in_a_browser(report, tmp_path):
    from PIL import Image

    out, html = report
    shot = tmp_path / "screenshot.png"
    _headless(tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,4000", out.resolve().as_uri())
    with Image.open(shot) as image:
        assert image.size == (1280, 4000)
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.std() > 20  # not a blank page: text, tables and figures
    assert (pixels < 100).mean() > 0.01  # dark text and plot lines

    checked = tmp_path / "checked.html"
    checked.write_text(html.replace("</body>", _COUNT_IMAGES + "</body>"), encoding="utf-8")
    dom = _headless(tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", checked.resolve().as_uri())
    n = len(_img_sources(html))
    assert f'<p id="image-check">decoded {n} of {n}</p>' in dom.stdout
