"""``calohls firmware``: checked firmware of a quantization-aware trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from calohls.config import FirmwareConfig, load_config
from calohls.files import refuse_inputs_inside

__all__ = ["firmware_command"]


@click.command("firmware", short_help="Firmware of a QAT run: hls4ml and Verilog checked bit for bit, Yosys counts.")
@click.argument("run", type=click.Path(path_type=Path, file_okay=False))
@click.option("-o", "--output", type=click.Path(path_type=Path, file_okay=False), required=True, help="Output folder.")
@click.option("--clock-period", type=float, help="Target clock period in ns. [default: 2.5]")
@click.option(
    "--latency-cutoff", type=float, help="Most combinational delay per pipeline stage in ns. [default: clock period]"
)
@click.option("--clusters", type=int, help="Test clusters the firmware is checked on. [default: 10000]")
@click.option("--no-synth", "no_synth", is_flag=True, help="Skip the Yosys synthesis.")
@click.option(
    "--epoch",
    type=int,
    help="Build this Pareto checkpoint of RUN (an epoch listed in RUN/pareto.json). [default: the selected model]",
)
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), help="YAML of options.")
@click.option("--overwrite", is_flag=True, help="Replace the output folder if it exists.")
def firmware_command(
    run: Path,
    output: Path,
    clock_period: float | None,
    latency_cutoff: float | None,
    clusters: int | None,
    no_synth: bool,
    epoch: int | None,
    config_path: Path | None,
    overwrite: bool,
) -> None:
    """Build the firmware of the QAT model in RUN (made by `calohls qat`): the hls4ml project and da4ml's pipelined
    Verilog, both compared bit for bit with the Keras model on the run's first test clusters, and Yosys resource
    counts; writes OUTPUT/firmware.json.

    \b
    Examples:
      calohls firmware runs/qat -o fw/qat
      calohls firmware runs/qat -o fw/fast --clock-period 2.0 --clusters 2000 --no-synth
      calohls firmware runs/qat -o fw/qat-e31 --epoch 31
    """
    config = load_config(
        FirmwareConfig,
        config_path,
        clock_period=clock_period,
        latency_cutoff=latency_cutoff,
        clusters=clusters,
        synth=False if no_synth else None,
    )
    refuse_inputs_inside(output, (run, config_path), overwrite)
    from calohls.firmware.build import firmware_from_run

    result = firmware_from_run(run, output, config, overwrite=overwrite, epoch=epoch)
    checked = f"{result.clusters_checked:,} clusters"
    verdict = "bit-exact" if result.bit_exact else "NOT bit-exact"
    click.echo(
        f"{verdict} on {checked}: C simulation {result.differing['hls']} and RTL {result.differing['rtl']} differ"
    )
    rows = [("latency", f"{result.latency_cycles} cycles = {result.latency_ns:g} ns, II {result.ii}")]
    for key in ("LUT", "FF"):
        synth = f"{result.resources[key]:,}" if result.resources else "-"
        rows.append((key, f"{synth} (Yosys), {result.estimate[key]:,} (da4ml estimate)"))
    if result.resources:
        rows += [(key, f"{result.resources[key]:,}") for key in ("CARRY", "DSP", "BRAM")]
    rows += _system_rows(result)
    for name, value in rows:
        click.echo(f"  {name:<8} {value}")
    click.echo(f"wrote {output}")
    if not result.bit_exact:
        click.echo(f"error: the firmware differs from the model; see {output / 'firmware.json'}", err=True)
        click.get_current_context().exit(1)


def _system_rows(result: Any) -> list[tuple[str, str]]:
    """The timing estimate (per stage: LUT levels, carry elements, ns) and the L0 system view."""
    rows = []
    timing = result.timing
    if timing is not None:
        met = "meets" if timing.met else "MISSES"
        rows.append(("timing", f"estimated {timing.period_ns:.2f} ns = {timing.fmax_mhz:.0f} MHz, {met} the "
                     f"{timing.target_period_ns:g} ns clock; latency {result.latency_estimate_ns:.1f} ns"))  # fmt: skip
        stages = ", ".join(f"{s.lut_levels} LUT + {s.carry_cells} CARRY = {s.delay_ns:.2f} ns" for s in timing.stages)
        rows.append(("stages", stages))
    l0 = result.l0
    rows.append(("L0", f"{l0.clusters_per_bx_per_instance} clusters per bunch crossing per instance at "
                 f"{l0.clock_mhz:g} MHz; {l0.instances} instances in {l0.lut_budget:,} LUT: {l0.clusters_per_bx} "
                 "per crossing"))  # fmt: skip
    return rows
