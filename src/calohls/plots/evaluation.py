"""The figures of ``calohls evaluate`` (the poster's Fig 2, per particle group).

* ``response_<group>.png``: response vs true energy, EM scale (left) and DeepSets (right), with median and quantiles;
* ``resolution_<group>.png``: resolution vs true energy of every method (EM scale, LCW-like, GBDT, the
  particle-type oracle, DeepSets), with the 68 % bootstrap intervals as error bars;
* ``median_<group>.png``: median response of every method, with its interval and the ±2 % band.

Labels, particle groups and masks come from the registries of :mod:`calohls.physics.methods`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from calohls.physics.methods import GROUPS, METHODS, group_file_tag, group_mask
from calohls.plots.response import median_comparison, resolution_comparison, response_2d
from calohls.plots.style import experiment_label, new_figure, save, style_context

if TYPE_CHECKING:
    from calohls.physics.evaluate import Evaluation

__all__ = ["FILE_GROUP", "draw_evaluation"]

#: File-name form of each particle group.
FILE_GROUP = {key: group_file_tag(key) for key in GROUPS}


def draw_evaluation(result: Evaluation, out_dir: str | Path, *, extra: str | None = None) -> list[Path]:
    """Draw and save every evaluation figure into ``out_dir`` (``RUN/eval``); returns the files written.

    ``extra`` is the second line of the experiment label; by default what the clusters are (``result.sample``).
    """
    extra = result.sample if extra is None else extra
    out_dir = Path(out_dir)
    written = []
    with style_context():
        for group, by_method in result.tables.items():
            name, label = FILE_GROUP.get(group, group), GROUPS[group][0]
            mask = group_mask(result.particle, GROUPS[group][1])
            e_true = result.e_true[mask]

            fig, axes = new_figure(1, 2, figsize=(16, 6.5))
            for ax, method in zip(axes, ("em", "deepsets"), strict=True):
                response_2d(
                    ax, e_true, result.predictions[method][mask] / e_true, by_method[method],
                    label=f"{METHODS[method].label}, {label}", colorbar=method == "deepsets",
                )  # fmt: skip
                experiment_label(ax, extra=extra)
            written.append(save(fig, out_dir / f"response_{name}.png"))

            tables = {METHODS[m].label: by_method[m] for m in METHODS if m in by_method}
            for kind, draw in (("resolution", resolution_comparison), ("median", median_comparison)):
                fig, ax = new_figure()
                draw(ax, tables)
                ax.set_title(label, loc="right")
                experiment_label(ax, extra=extra)
                written.append(save(fig, out_dir / f"{kind}_{name}.png"))
    return written
