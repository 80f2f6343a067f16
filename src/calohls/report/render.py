"""Render a collected study (:mod:`calohls.report.collect`) as one self-contained HTML page.

The page needs nothing but itself: figures are embedded as base64 PNG data URIs, the style sheet is inline, and
nothing is fetched (no scripts, fonts or style sheets from elsewhere). Every text from the study folder is escaped
(Jinja2 autoescaping). The view models built here are frozen dataclasses of text, numbers and lists, so the template
only lays them out.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import jinja2

from calohls import __version__
from calohls.errors import InputFileError
from calohls.files import atomic_output, check_output
from calohls.physics.methods import GROUPS, METHODS, group_file_tag, method_labels, resolution_better_than
from calohls.report.collect import EXPECTED, DataFile, Figure, Firmware, PTQResult, Run, Scan, Study, collect_study
from calohls.report.figures import history_png

__all__ = ["VERSION_PACKAGES", "fmt", "render_report", "value_with_error", "write_report"]

log = logging.getLogger(__name__)

#: Packages whose versions the report lists: distribution name → display name.
VERSION_PACKAGES = {
    "calohls": "calohls",
    "hls4ml": "hls4ml",
    "hgq2": "HGQ2",
    "da4ml": "da4ml",
    "keras": "Keras",
    "jax": "JAX",
    "numpy": "NumPy",
    "verilator": "Verilator",
}
#: Particle groups in evaluation figure names (and by key) → label.
_GROUP_LABELS = {name: g.label for key, g in GROUPS.items() for name in (group_file_tag(key), key)}
#: First word of a figure's file name → what it shows.
_FIGURE_KINDS = {
    "response": "Response E_pred/E_true",
    "resolution": "Resolution",
    "median": "Median response",
    "mpe": "MPE of the quantized output",
    "layers": "Per-layer differences hls4ml − Keras",
    "pareto": "Pareto front",
}
_EVAL_GROUPS = tuple(group_file_tag(key) for key in GROUPS)
_EVAL_KINDS = ("resolution", "median", "response")
_PTQ_KINDS = ("mpe", "resolution", "layers")
_PARETO_COLUMNS = ("epoch", "val_loss", "ebops", "beta", "file", "selected")
_POINT_COLUMNS = ("key", "kind", "preset", "precision", "beta", "resolution", "mpe", "ebops", "lut", "ff", "dsp",
                  "latency_ns", "pareto")  # fmt: skip
_RUN_FACTS = (
    ("model", ("model", "name")),
    ("parameters", ("model", "parameters")),
    ("clusters in the data", ("data", "clusters")),
    ("train / val / test clusters", ("sizes",)),
    ("epochs", ("epochs",)),
    ("best epoch", ("best_epoch",)),
    ("best validation loss", ("best_val_loss",)),
    ("converged (ended on a plateau)", ("converged",)),
    ("training time [s]", ("seconds",)),
    ("clusters / s", ("train_clusters_per_second",)),
    ("created", ("created",)),
)


# -- view models: what the template lays out ------------------------------------------------------------------


@dataclass(frozen=True)
class _Image:
    """A figure embedded as a data URI, with its file name and caption."""

    src: str
    name: str
    caption: str
    width: int
    height: int
    wide: bool = False


@dataclass(frozen=True)
class _Cell:
    text: str
    num: bool


@dataclass(frozen=True)
class _Row:
    cells: list[_Cell]
    marked: bool


@dataclass(frozen=True)
class _Table:
    """A generic table of records; ``nested`` names the columns left out (lists, objects)."""

    columns: list[str]
    rows: list[_Row]
    nested: list[str]


@dataclass(frozen=True)
class _ResponseRow:
    bin: str
    count: str
    median: list[str]
    resolution: list[str]


@dataclass(frozen=True)
class _ResponseTable:
    """Median response and resolution per E_true bin, one column per calibration."""

    methods: list[str]
    rows: list[_ResponseRow]
    resolution_label: str


@dataclass(frozen=True)
class _Group:
    label: str
    table: _ResponseTable
    checks: list[str]


@dataclass(frozen=True)
class _Evaluation:
    test_clusters: Any
    groups: list[_Group]
    bootstrap: Any


@dataclass(frozen=True)
class _RunView:
    id: str
    label: str
    facts: list[tuple[str, str]]
    history: _Image | None
    evaluation: _Evaluation | None
    eval_images: list[_Image]
    images: list[_Image]
    pareto: _Table | None
    has_pareto_file: bool
    warnings: list[str]


@dataclass(frozen=True)
class _PTQView:
    label: str
    findings: list[str]
    best: _Table | None
    images: list[_Image]
    warnings: list[str]


@dataclass(frozen=True)
class _FirmwareRow:
    design: str
    bit_exact: Any
    cells: list[str]
    estimate: str
    warnings: list[str]


@dataclass(frozen=True)
class _ScanView:
    label: str
    points: _Table | None
    n_points: int
    n_pareto: int
    images: list[_Image]
    warnings: list[str]


@dataclass(frozen=True)
class _Answer:
    label: str
    text: str
    details: list[str]


@dataclass(frozen=True)
class _DataView:
    """A cluster file's summary; only ``label`` and ``warnings`` when it has none (``summary`` False)."""

    label: str
    summary: bool
    warnings: list[str]
    facts: list[tuple[str, str]] | None = None
    energy: list[dict[str, str]] | None = None
    particles: list[dict[str, str]] | None = None
    response: _ResponseTable | None = None
    response_quantity: str | None = None


def fmt(value: Any) -> str:
    """A value as table text: numbers to four significant digits (integers in full), booleans as yes/no, missing
    or non-finite values as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        if 1e4 <= abs(value) < 1e9:
            return f"{value:,.0f}"
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {fmt(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "item"
    slug, n = base, 2
    while slug in taken:
        slug, n = f"{base}-{n}", n + 1
    taken.add(slug)
    return slug


def _data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _caption(name: str) -> str:
    """What a figure shows, from its file name (``eval/response_pi0.png`` → "Response E_pred/E_true — π0")."""
    words = Path(name).stem.split("_")
    kind = _FIGURE_KINDS.get(words[0].lower())
    if kind is None:
        return Path(name).stem.replace("_", " ")
    rest = [_GROUP_LABELS.get(w, w) for w in words[1:] if w.lower() not in kind.lower().split()]
    return f"{kind} — {', '.join(rest)}" if rest else kind


def _image(figure: Figure, warnings: list[str]) -> _Image | None:
    """The view of one figure file, or None (and a warning) when it cannot be read."""
    try:
        data = figure.path.read_bytes()
    except OSError as exc:
        warnings.append(f"{figure.label}: cannot read the figure ({type(exc).__name__})")
        return None
    if figure.width is None or figure.height is None:
        warnings.append(f"{figure.label}: not a PNG image; left out")
        return None
    return _Image(
        src=_data_uri(data),
        name=figure.name,
        caption=_caption(figure.name),
        width=figure.width,
        height=figure.height,
        wide=figure.width > 1.8 * figure.height,
    )


def _images(figures: Iterable[Figure], warnings: list[str]) -> list[_Image]:
    return [img for f in figures if (img := _image(f, warnings)) is not None]


def _table(rows: Sequence[Mapping[str, Any]], preferred: Sequence[str], mark: str | None = None) -> _Table:
    """A generic table of records: the preferred columns first, then the others in order of appearance; columns with
    nested values (lists, objects) are left out and named. Rows whose ``mark`` field is true are highlighted."""
    keys = list(dict.fromkeys([k for k in preferred if any(k in r for r in rows)] + [k for r in rows for k in r]))
    nested = [k for k in keys if any(isinstance(r.get(k), Mapping | list | tuple) for r in rows)]
    columns = [k for k in keys if k not in nested]
    body = []
    for r in rows:
        cells = [_Cell(fmt(r.get(c)), isinstance(r.get(c), int | float)) for c in columns]
        body.append(_Row(cells, bool(mark and r.get(mark) is True)))
    return _Table(columns, body, nested)


def _response_table(tables: Mapping[str, Any], methods: Mapping[str, str]) -> _ResponseTable | None:
    """Median response and resolution per E_true bin, one column per calibration."""
    keys = [m for m in methods if isinstance(tables.get(m), Mapping)]
    if not keys:
        return None
    first = tables[keys[0]]
    edges, counts = first.get("edges") or [], first.get("counts") or []
    rows = []
    for i, count in enumerate(counts):
        lo, hi = (edges[i], edges[i + 1]) if i + 1 < len(edges) else (None, None)
        median = [value_with_error(_at(tables[m].get("median"), i), _at(tables[m].get("median_err"), i)) for m in keys]
        resolution = [
            value_with_error(_at(tables[m].get("resolution"), i), _at(tables[m].get("resolution_err"), i)) for m in keys
        ]
        rows.append(_ResponseRow(f"{_edge(lo)}–{_edge(hi)}", fmt(count), median, resolution))
    return _ResponseTable([methods[m] for m in keys], rows, first.get("resolution_label", "resolution"))


def _edge(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, int | float) else "–"


def _at(values: Any, i: int) -> Any:
    return values[i] if isinstance(values, list) and i < len(values) else None


def value_with_error(value: Any, err: Any = None) -> str:
    """A response or resolution with its uncertainty in units of the last digit: ``0.173(5)`` = 0.173 ± 0.005, to
    three decimals (two when the uncertainty reaches 0.1: ``0.99(13)``); without an uncertainty the value to three
    decimals; an en dash when missing."""
    if not (isinstance(value, int | float) and math.isfinite(value)):
        return "–"
    if not (isinstance(err, int | float) and math.isfinite(err)):
        return f"{value:.3f}"
    digits = 3 if err < 0.0995 else 2
    return f"{value:.{digits}f}({max(round(err * 10**digits), 1)})"


def _evaluation(metrics: Mapping[str, Any] | None) -> _Evaluation | None:
    if metrics is None:
        return None
    methods = metrics.get("methods")
    methods = methods if isinstance(methods, Mapping) else method_labels()
    groups = metrics.get("groups") if isinstance(metrics.get("groups"), Mapping) else {}
    out = []
    for group, tables in (metrics.get("tables") or {}).items():
        if not isinstance(tables, Mapping) or (table := _response_table(tables, methods)) is None:
            continue
        checks = _dig(metrics, "checks", group) or {}
        out.append(_Group(groups.get(group, group), table, _checks_text(checks)))
    return _Evaluation(metrics.get("test_clusters"), out, metrics.get("bootstrap"))


def _checks_text(checks: Mapping[str, Any]) -> list[str]:
    """One line per condition of ``calohls evaluate`` (its verdict), after the summary of the bin counts."""
    if not checks:
        return []
    within = "yes" if checks.get("median_within_2pct_above_1gev") else "no"
    worst = checks.get("worst_median_deviation_above_1gev")
    worst_text = f" (worst {100 * worst:.1f} %)" if isinstance(worst, int | float) else ""
    bins = fmt(checks.get("bins"))
    better = ", ".join(
        f"{label} in {fmt(checks[f'bins_better_than_{key}'])}/{bins}"
        for key, label in method_labels().items()
        if f"bins_better_than_{key}" in checks
    )
    network = METHODS["deepsets"].label
    lines = [f"{network} median within ±2 % above 1 GeV: {within}{worst_text}; {resolution_better_than(better)} bins"]
    conditions = checks.get("conditions")
    if isinstance(conditions, Mapping):
        verdicts = [c["verdict"] for c in conditions.values() if isinstance(c, Mapping) and "verdict" in c]
        lines += [f"{network}: {verdict}" for verdict in verdicts]
    return lines


def _eval_order(figure: Figure) -> tuple[int, int, str]:
    """Evaluation figures by particle group (all, π0, π±), then resolution and median side by side, then response."""
    words = Path(figure.name).stem.split("_")
    group = _EVAL_GROUPS.index(words[-1]) if words[-1] in _EVAL_GROUPS else len(_EVAL_GROUPS)
    kind = _EVAL_KINDS.index(words[0]) if words[0] in _EVAL_KINDS else len(_EVAL_KINDS)
    return group, kind, figure.name


def _history_image(run: Run) -> _Image | None:
    """The loss curves of the run, drawn here from history.json (None without losses or the plot stack)."""
    best = run.info.get("best_epoch")
    png = history_png(run.history, best if isinstance(best, int) else None) if run.history else None
    if png is None:
        return None
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    caption = "Training and validation loss per epoch"
    return _Image(_data_uri(png), "history.json", caption, width, height)


def _run_view(run: Run, anchors: set[str], warnings: list[str]) -> _RunView:
    local = list(run.warnings)
    if run.info.get("converged") is False:
        local.append(f"{run.label}: {_dig(run.info, 'convergence', 'epoch_cap')} epochs were not enough: the "
                     "validation loss was still falling at the epoch cap (not converged); raise epochs")  # fmt: skip
    facts = [(label, fmt(_dig(run.info, *keys))) for label, keys in _RUN_FACTS]
    facts = [(label, text) for label, text in facts if text != "–"]
    eval_figures = sorted((f for f in run.figures if f.name.startswith("eval/")), key=_eval_order)
    other = [f for f in run.figures if not f.name.startswith("eval/")]
    view = _RunView(
        id=_slug(f"{run.stage}-{run.label}", anchors),
        label=run.label,
        facts=facts,
        history=_history_image(run),
        evaluation=_evaluation(run.metrics),
        eval_images=_images(eval_figures, local),
        images=_images(other, local),
        pareto=_table(run.pareto, _PARETO_COLUMNS, mark="selected") if run.pareto else None,
        has_pareto_file=run.pareto is not None,
        warnings=local,
    )
    warnings += local
    return view


def _ptq_order(figure: Figure) -> tuple[int, str]:
    """PTQ figures: MPE first, then resolution, then the per-layer differences."""
    word = Path(figure.name).stem.split("_")[0]
    return (_PTQ_KINDS.index(word) if word in _PTQ_KINDS else len(_PTQ_KINDS)), figure.name


def _ptq_view(ptq: PTQResult, warnings: list[str]) -> _PTQView:
    local = list(ptq.warnings)
    summary = ptq.summary or {}
    best = []
    for sweep, by_run in (summary.get("sweeps") or {}).items():
        for name, entry in (by_run or {}).items():
            if isinstance(entry, Mapping):
                best.append({
                    "sweep": sweep,
                    "run": name,
                    "parameters": entry.get("parameters"),
                    "best value": _dig(entry, "best", "value"),
                    "best MPE [%]": _dig(entry, "best", "mpe"),
                    "bits for MPE < 1 %": entry.get("bits_for_mpe_below_1pct"),
                })  # fmt: skip
    findings = [str(f) for f in summary.get("findings") or []]
    view = _PTQView(
        label=ptq.label,
        findings=findings,
        best=_table(best, ()) if best else None,
        images=_images(sorted(ptq.figures, key=_ptq_order), local),
        warnings=local,
    )
    warnings += local
    return view


def _firmware_row(fw: Firmware) -> _FirmwareRow:
    info = fw.info
    resources = info.get("resources") if isinstance(info.get("resources"), Mapping) else {}
    differing = info.get("differing") if isinstance(info.get("differing"), Mapping) else {}
    estimate = info.get("estimate") if isinstance(info.get("estimate"), Mapping) else {}
    scalars = {k: v for k, v in estimate.items() if isinstance(v, int | float | str | bool)}
    return _FirmwareRow(
        design=fw.label,
        bit_exact=info.get("bit_exact"),
        cells=[
            fmt(info.get("clusters_checked")),
            " / ".join(fmt(differing.get(k)) for k in ("hls", "rtl")) if differing else "–",
            *(fmt(resources.get(k)) for k in ("LUT", "FF", "CARRY", "DSP", "BRAM")),
            fmt(_dig(info, "latency", "ns")),
            fmt(_dig(info, "latency", "cycles")),
            fmt(info.get("ii")),
            fmt(info.get("clock_period")),
        ],
        estimate=fmt(dict(list(scalars.items())[:6])) if scalars else "–",
        warnings=list(fw.warnings),
    )


def _scan_view(scan: Scan, warnings: list[str]) -> _ScanView:
    local = list(scan.warnings)
    view = _ScanView(
        label=scan.label,
        points=_table(scan.points, _POINT_COLUMNS, mark="pareto") if scan.points else None,
        n_points=len(scan.points),
        n_pareto=sum(1 for p in scan.points if p.get("pareto") is True),
        images=_images(scan.figures, local),
        warnings=local,
    )
    warnings += local
    return view


def _answers(study: Study) -> list[_Answer]:
    out = []
    for scan in study.scans:
        answer = scan.answer or {}
        text = answer.get("answer")
        if isinstance(text, str) and text.strip():
            details = answer.get("details")
            details = [str(d) for d in details] if isinstance(details, list) else []
            out.append(_Answer(scan.label, text, details))
    return out


def _data_view(data: DataFile) -> _DataView:
    if data.summary is None:
        return _DataView(label=data.label, summary=False, warnings=list(data.warnings))
    s = data.summary.to_json()
    energy = [
        {"field": name, **{k: fmt(_dig(v, k)) for k in ("min", "median", "max")}}
        for name, v in (s.get("energy") or {}).items()
    ]
    particles = [
        {"name": name, "clusters": fmt(_dig(p, "clusters")), "fraction": f"{100 * _dig(p, 'fraction'):.1f} %"}
        for name, p in (s.get("particles") or {}).items()
        if isinstance(_dig(p, "fraction"), int | float)
    ]
    groups = _dig(s, "response", "groups") or {}
    response = _response_table(
        {k: g for k, g in groups.items() if isinstance(g, Mapping)},
        {k: f"{g.get('label', k)} ({fmt(g.get('clusters'))})" for k, g in groups.items() if isinstance(g, Mapping)},
    )
    truncated = s.get("truncated") or {}
    facts = [
        ("clusters", fmt(s.get("n_clusters"))),
        ("events", fmt(s.get("n_events"))),
        ("cells stored per cluster", fmt(s.get("max_cells"))),
        (
            "clusters with more cells (truncated)",
            f"{fmt(truncated.get('clusters'))} ({100 * (truncated.get('fraction') or 0):.1f} %)",
        ),
        ("largest cluster [cells]", fmt(truncated.get("max_cells_total"))),
        ("format / schema", f"{s.get('format', '–')} / {fmt(s.get('schema_version'))}"),
    ]
    return _DataView(
        label=data.label,
        summary=True,
        warnings=list(data.warnings),
        facts=facts,
        energy=energy,
        particles=particles,
        response=response,
        response_quantity=_dig(s, "response", "quantity") or "e_em / e_true",
    )


def _versions(study: Study) -> list[dict[str, str]]:
    """Each listed package's version: as recorded in the runs' run.json, else in study.json, else as installed now."""
    recorded: dict[str, dict[str, list[str]]] = {}
    for run in (*study.runs, *study.qat):
        versions = run.info.get("versions")
        for package, value in versions.items() if isinstance(versions, Mapping) else ():
            recorded.setdefault(package, {}).setdefault(str(value), []).append(run.label)
    in_study = _dig(study.info, "versions")
    in_study = in_study if isinstance(in_study, Mapping) else {}
    rows = []
    for package, display in VERSION_PACKAGES.items():
        if package in recorded:
            values = recorded[package]
            if len(values) == 1:
                text, source = next(iter(values)), "run.json"
            else:
                text = "; ".join(f"{v} ({', '.join(runs)})" for v, runs in values.items())
                source = "run.json (runs differ)"
        elif package in in_study:
            text, source = str(in_study[package]), "study.json"
        else:
            text, source = _installed(package), "installed (report time)"
        rows.append({"package": display, "version": text, "source": source})
    return rows


def _installed(package: str) -> str:
    if package == "calohls":
        return __version__
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _configs(study: Study) -> list[dict[str, str]]:
    """The config files, then the study's own record (study.json) when there is one."""
    out = [{"label": c.label, "text": c.text} for c in study.configs]
    if study.info:
        out.append({"label": "study.json", "text": json.dumps(study.info, indent=1, ensure_ascii=False)})
    return out


def render_report(study: Study, *, now: datetime | None = None) -> str:
    """The HTML page of ``study`` (see the module docstring)."""
    now = now or datetime.now(UTC)
    warnings = [*study.warnings]
    anchors: set[str] = set()
    data = [_data_view(d) for d in study.data]
    warnings += [w for d in study.data for w in d.warnings]
    runs = [_run_view(r, anchors, warnings) for r in study.runs]
    qat = [_run_view(r, anchors, warnings) for r in study.qat]
    ptq = [_ptq_view(p, warnings) for p in study.ptq]
    firmware = [_firmware_row(f) for f in study.firmware]
    warnings += [w for f in firmware for w in f.warnings]
    firmware_images = [
        {"label": fw.label, "images": _images(fw.figures, warnings)} for fw in study.firmware if fw.figures
    ]
    scans = [_scan_view(s, warnings) for s in study.scans]
    other = _images(study.other_figures, warnings)
    info = study.info or {}
    context = {
        "title": f"calohls study: {study.root.resolve().name}",
        "root": str(study.root.resolve()),
        "created": next((str(info[k]) for k in ("created", "updated") if isinstance(info.get(k), str)), None),
        "generated": now.strftime("%Y-%m-%d %H:%M:%S %Z").strip(),
        "answers": _answers(study),
        "scans_run": bool(study.scans),
        "data": data,
        "runs": runs,
        "qat": qat,
        "ptq": ptq,
        "firmware": firmware,
        "firmware_images": firmware_images,
        "scans": scans,
        "other_images": other,
        "configs": _configs(study),
        "versions": _versions(study),
        "warnings": warnings,
    }
    return _template().render(**context)


def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = fmt
    return env.get_template("template.html.j2")


def write_report(
    study_dir: str | os.PathLike[str], output_html: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write the HTML report of the study in ``study_dir`` to ``output_html`` (atomically).

    Args:
        study_dir: A study folder, or any folder holding calohls run, PTQ, firmware or scan folders.
        output_html: The page to write.
        overwrite: Replace an existing ``output_html``.

    Returns:
        The path written.

    Raises:
        FileExistsRefusedError: ``output_html`` exists and ``overwrite`` is False (checked before any work).
        InputFileError: ``study_dir`` is not a folder, or holds nothing calohls made.
    """
    output = Path(output_html)
    check_output(output, overwrite)  # refuse before any work (and before making the output's folder)
    study = collect_study(study_dir)
    if study.empty:
        raise InputFileError(
            f"{study_dir} holds nothing calohls made; expected {EXPECTED} (give the study folder or a run folder)"
        )
    html = render_report(study)
    with atomic_output(output, overwrite=overwrite) as partial:
        partial.write_text(html, encoding="utf-8")
    log.info("wrote %s (%d figures)", output, len(study.figures))
    return output
