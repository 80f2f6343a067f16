"""Options of every stage as pydantic models: validated on the way in, written resolved beside every output."""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from calohls.errors import ConfigError
from calohls.files import why_not_a_file
from calohls.particles import PARTICLES
from calohls.quant.sweeps import SWEEP_NAMES, SweepName

__all__ = [
    "FPGA_CELLS",
    "NETWORK_CELLS",
    "PRESETS",
    "STORED_CELLS",
    "STUDY_PRESETS",
    "SWEEPS",
    "FirmwareConfig",
    "LCWConfig",
    "ModelConfig",
    "PTQConfig",
    "QATConfig",
    "SimConfig",
    "StudyConfig",
    "TopoConfig",
    "TrainConfig",
    "dump_config",
    "load_config",
    "load_yaml",
    "shorten",
    "validation_message",
]

#: Cells *stored* per cluster in a cluster file by default (simulation and conversion): the file's padded ``N``.
#: Not the network's input size: a network reads its own ``max_cells`` (:data:`NETWORK_CELLS`,
#: :data:`FPGA_CELLS`), the most energetic of the stored cells.
STORED_CELLS = 256


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # NaN or inf is never an option

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, v: Any, info: ValidationInfo) -> Any:
        """``max_cells: true`` is a mistake, not 1: a number option refuses true/false."""
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(v, bool) and field is not None and _is_number(field.annotation):
            raise ValueError(f"a number is needed, not {str(v).lower()}")
        return v


def _is_number(annotation: Any) -> bool:
    """Whether an option's type is a number (int or float, maybe None)."""
    return annotation in (int, float) or set(getattr(annotation, "__args__", ())) in (
        {int, type(None)},
        {float, type(None)},
    )


class TopoConfig(_Strict):
    """4-2-0 topo-clustering thresholds in units of the cell's total noise σ."""

    seed: float = Field(4.0, gt=0, description="|E| / σ above which a cell seeds a cluster")
    grow: float = Field(2.0, gt=0, description="|E| / σ above which a neighbour extends the cluster")
    boundary: float = Field(0.0, ge=0, description="|E| / σ above which a neighbour joins as a boundary cell")

    @model_validator(mode="after")
    def _ordered(self) -> TopoConfig:
        if not self.seed >= self.grow >= self.boundary:
            raise ValueError(
                f"thresholds must satisfy seed >= grow >= boundary; got {self.seed}-{self.grow}-{self.boundary}"
            )
        return self


class SimConfig(_Strict):
    """Options of the built-in single-particle simulation (``calohls simulate``)."""

    particles: tuple[str, ...] = Field(("pi+", "pi-", "pi0"), description="particle types, drawn with equal odds")
    events: int = Field(10_000, gt=0, description="number of single-particle events")
    mu: float = Field(200.0, ge=0, le=1000, description="mean pile-up interactions per bunch crossing")
    seed: int = Field(0, ge=0, description="random seed; the same seed gives the same clusters")
    e_min: float = Field(0.5, gt=0, description="lowest particle energy, GeV (log-uniform)")
    e_max: float = Field(500.0, gt=0, description="highest particle energy, GeV (log-uniform)")
    eta_max: float = Field(0.7, gt=0, le=0.8, description="particles are drawn uniformly in |η| < eta_max")
    max_cells: int = Field(
        STORED_CELLS,
        ge=1,
        le=4096,
        description="cells stored per cluster in the file (highest energy first); a network reads at most its own "
        "model max_cells of them",
    )
    noise: bool = Field(
        True,
        description="add electronic and pile-up noise to the cell signals; without it the topo-cluster thresholds "
        "still use the nominal σ (for studies of the sampling resolution alone)",
    )
    min_e_true: float = Field(
        0.05, ge=0, description="clusters with less calibration-hit energy (GeV) are pile-up/noise and are dropped"
    )
    batch_events: int = Field(2000, ge=1, le=100_000, description="events simulated per batch (memory vs overhead)")
    topo: TopoConfig = Field(default_factory=TopoConfig)

    @field_validator("particles", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("particles")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError(f"no particle given; choose from {', '.join(PARTICLES)}")
        for p in v:
            if p not in PARTICLES:
                raise ValueError(f"unknown particle {p!r}; choose from {', '.join(PARTICLES)}")
        return v

    @model_validator(mode="after")
    def _range(self) -> SimConfig:
        if self.e_min >= self.e_max:
            raise ValueError(f"e_min={self.e_min} must be below e_max={self.e_max}")
        return self


_LCW_COUNTS = ("rho_bins", "depth_bins", "energy_bins", "cell_rho_bins", "weight_energy_bins")
_LCW_PRIORS = ("prior_clusters", "prior_cells")


class LCWConfig(_Strict):
    """Options of the LCW-like calibration's fit (:meth:`calohls.physics.baselines.LCWCalibration.fit`).

    Bin edges are equally spaced between the 0.5 % and 99.5 % quantiles of the training values; sparse bins are
    shrunk towards coarser tables with the strengths ``prior_clusters`` and ``prior_cells``.
    """

    rho_bins: int = Field(20, ge=1, description="bins in log10 ⟨ρ⟩ of the classification")
    depth_bins: int = Field(20, ge=1, description="bins in cluster depth of the classification")
    energy_bins: int = Field(8, ge=1, description="bins in log10 e_em of the classification (1: no energy dependence)")
    cell_rho_bins: int = Field(30, ge=1, description="bins in log10 ρ_cell of the hadronic weights")
    weight_energy_bins: int = Field(
        12, ge=1, description="bins in log10 e_em of the hadronic weights (1: no energy dependence)"
    )
    weight_range: tuple[float, float] = Field(
        (0.5, 3.0), description="lowest (at most 1) and highest (at least 1) hadronic weight"
    )
    prior_clusters: float = Field(10.0, ge=0, description="shrinkage strength of p_EM, in clusters (0: none)")
    prior_cells: float = Field(50.0, ge=0, description="shrinkage strength of the hadronic weights, in cells (0: none)")
    absorb_negative: bool = Field(
        True,
        description="let the hadronic weights absorb the true-minus-EM energy of each training cluster's cells with "
        "E <= 0; false: the plain ratio Σ e_true / Σ e",
    )

    @field_validator(*_LCW_COUNTS, mode="before")
    @classmethod
    def _whole(cls, v: Any) -> Any:
        if not isinstance(v, int | np.integer):
            raise ValueError("must be a whole number of at least 1")
        return v

    @field_validator(*_LCW_PRIORS, mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        if not isinstance(v, int | float | np.number):
            raise ValueError("must be a finite number >= 0")
        return v

    @field_validator("weight_range")
    @classmethod
    def _around_one(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= 1 <= v[1]:
            raise ValueError("must satisfy 0 < low <= 1 <= high, e.g. (0.5, 3.0)")
        return v


#: Network input of ``calohls train``: the most energetic cells of a cluster the float network sees (``max_cells``
#: of :class:`ModelConfig`; a file stores more, :data:`STORED_CELLS`).
NETWORK_CELLS = 64
#: Network input of the FPGA designs (``calohls qat`` and the study): fewer cells than the float network, as the
#: firmware's size grows with its inputs; the float resolution at 16 cells equals that at 32 (docs/physics.md).
FPGA_CELLS = 16

#: Named DeepSets sizes, tiny to xlarge: (Φ layer widths, F layer widths). "medium" is the default.
PRESETS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "tiny": ((8, 8), (8,)),
    "small": ((16, 16), (16, 8)),
    "medium": ((32, 32), (32, 16)),
    "large": ((64, 64), (64, 32)),
    "xlarge": ((128, 128, 128), (128, 64)),
}


class ModelConfig(_Strict):
    """DeepSets architecture: Φ on every cell, the sum over cells (KSum), F on the sum, one output."""

    preset: str = Field("medium", description=f"named size: {', '.join(PRESETS)}; phi/f given explicitly win")
    phi: tuple[int, ...] | None = Field(None, description="widths of the Φ layers (per cell), e.g. 32,32")
    f: tuple[int, ...] | None = Field(None, description="widths of the F layers (after the sum), e.g. 32,16")
    max_cells: int = Field(
        NETWORK_CELLS,
        ge=1,
        le=1024,
        description="network input: cells per cluster the network sees (the most energetic of those stored)",
    )
    activation: str = Field("relu", description="hidden-layer activation (relu keeps padded cells at exactly zero)")

    @field_validator("phi", "f", mode="before")
    @classmethod
    def _widths(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                v = [int(x) for x in v.split(",") if x.strip()]
            except ValueError:
                raise ValueError(f"layer widths must be comma-separated integers such as 32,32; got {v!r}") from None
        return v

    @field_validator("phi", "f")
    @classmethod
    def _positive(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (not v or min(v) < 1):
            raise ValueError(f"layer widths must be positive integers, at least one layer; got {v}")
        return v

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise ValueError(f"unknown preset {v!r}; choose from {', '.join(PRESETS)}")
        return v

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, v: str) -> str:
        if v not in ("relu",):
            raise ValueError(f"activation {v!r} is not supported; use relu (padding must map to zero)")
        return v

    @property
    def phi_widths(self) -> tuple[int, ...]:
        return self.phi or PRESETS[self.preset][0]

    @property
    def f_widths(self) -> tuple[int, ...]:
        return self.f or PRESETS[self.preset][1]


class TrainConfig(_Strict):
    """Options of ``calohls train``."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    target: Literal["log_e", "log_ratio"] = Field(
        "log_ratio",
        description="log10 of the calibration factor E_true/E_EM (default: the better resolution at high energy "
        "for the same training; docs/physics.md, Target), or log10(E_true)",
    )
    seed: int = Field(0, ge=0, description="seed of the split, the initial weights and the batch order")
    val_fraction: float = Field(0.15, gt=0, lt=0.5, description="share of events for validation")
    test_fraction: float = Field(0.15, gt=0, lt=0.5, description="share of events kept for evaluation")
    epochs: int = Field(200, ge=1, description="most epochs: a cap; training ends on a plateau (patience)")
    batch_size: int = Field(512, ge=1, description="clusters per gradient step")
    learning_rate: float = Field(2e-3, gt=0, description="initial Adam learning rate")
    patience: int = Field(6, ge=1, description="epochs without validation improvement before stopping")
    lr_patience: int = Field(3, ge=1, description="epochs without improvement before halving the learning rate")
    max_clusters: int | None = Field(None, ge=1, description="use at most this many clusters of the file")
    closure_rounds: int = Field(
        5,
        ge=0,
        le=10,
        description="most rounds of fine-tuning on targets shifted per particle type, until the π0 and π± medians "
        "are within 1 % above closure_min_energy (the types known in training only; the network is unchanged; 0: off)",
    )
    closure_min_energy: float = Field(
        2.0, ge=0, description="E_true (GeV) above which the medians of each particle type are closed"
    )
    correction_min_energy: float = Field(
        2.0,
        ge=0,
        description="the response correction (numerical inversion) is fitted on validation clusters with E_true "
        "above this (GeV) and held below, where inverting a response that falls steeply with the prediction would "
        "widen the resolution (docs/physics.md)",
    )
    energy_weight: float = Field(
        0.5,
        ge=0,
        le=2,
        description="loss weight of a cluster ∝ E_EM^energy_weight (mean 1): the narrow high-energy responses then "
        "count beside the wide low-energy ones (0: every cluster alike)",
    )
    loss: Literal["mse", "mae", "huber"] = Field(
        "huber",
        description="regression loss on the target: 'mse' (its conditional mean), 'mae' (its conditional median, "
        "which stays with the more likely particle type where π0 and π± overlap) or 'huber' (MSE up to 0.05 in "
        "log10, linear beyond: less pull from the noise tails of low-energy clusters)",
    )
    em_weight: float = Field(
        0.0,
        ge=0,
        le=10,
        description="weight of an auxiliary loss that teaches the network to tell π0 (electromagnetic) from π± "
        "clusters (a training-only head; the deployed network is unchanged); 0: energy regression alone",
    )
    train_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="train on this share of the training clusters (learning curves); validation "
        "and test sets stay whole",
    )


#: QAT network defaults: the small preset on the FPGA's inputs (the :data:`FPGA_CELLS` most energetic cells).
QAT_MODEL_DEFAULTS = {"preset": "small", "max_cells": FPGA_CELLS}


class QATConfig(TrainConfig):
    """Options of ``calohls qat``: quantization-aware training with HGQ2's resource-aware (EBOPs) regularisation.

    The loss is MSE + beta × EBOPs. Beta rises log-linearly from ``beta_start`` to ``beta_end`` over the first
    ``beta_ramp`` of the epochs and then stays at ``beta_end``; from then on the learning rate halves after
    ``lr_patience`` and training stops after ``patience`` epochs without a better validation loss. Every checkpoint
    on the Pareto front of validation loss vs EBOPs is kept; ``select`` picks the run's model among them.
    """

    model: ModelConfig = Field(default_factory=lambda: ModelConfig(**QAT_MODEL_DEFAULTS))
    epochs: int = Field(80, ge=1, description="most epochs (ramp of beta, then training at beta_end)")
    beta_start: float = Field(1e-9, gt=0, description="EBOPs weight in the loss at the first epoch")
    beta_end: float = Field(1e-7, gt=0, description="EBOPs weight at the end of the ramp and after it")
    beta_ramp: float = Field(
        0.75, gt=0, le=1, description="share of the epochs over which beta rises from beta_start to beta_end"
    )
    loss: Literal["mse"] = Field("mse", description="QAT fits MSE (+ beta × EBOPs) only")
    closure_rounds: int = Field(
        0,
        ge=0,
        le=0,
        description="QAT runs no closure rounds of its own: started from a float run (init_from), it fits that run's "
        "per-type shifted targets",
    )
    select: Literal["loss", "ebops"] = Field(
        "ebops",
        description="checkpoint kept as the run's model: the best validation loss ('loss'), or the fewest EBOPs "
        "whose validation loss is within max_loss_increase of the best ('ebops')",
    )
    energy_weight: float = Field(
        0.5,
        ge=0,
        le=2,
        description="loss weight ∝ E_EM^energy_weight (mean 1), as in float training: the fine-tuning then keeps "
        "the float model's balance between low- and high-energy clusters (0: plain MSE)",
    )
    init_from: Path | None = Field(
        None,
        description="float run folder (calohls train) whose weights and feature scaling start the QAT; it must "
        "have the same widths, cells and target. None: random initial weights",
    )
    # small: the MSE is dominated by low-energy clusters, so a checkpoint a little above the best loss can be much
    # worse at high energy (docs/physics.md, QAT)
    max_loss_increase: float = Field(
        0.02, ge=0, le=10, description="largest relative validation-loss increase select='ebops' accepts"
    )

    @field_validator("model", mode="before")
    @classmethod
    def _qat_model_defaults(cls, v: Any) -> Any:
        if isinstance(v, dict):
            v = {**QAT_MODEL_DEFAULTS, **v}
        return v

    @field_validator("beta_end")
    @classmethod
    def _beta_rises(cls, v: float, info: ValidationInfo) -> float:
        start = info.data.get("beta_start")
        if start is not None and v < start:
            raise ValueError(f"beta_end must not be below beta_start={start:g}; raise beta_end or lower beta_start")
        return v

    @property
    def ramp_epochs(self) -> int:
        """Epochs of the beta ramp (at least one)."""
        return max(1, round(self.beta_ramp * self.epochs))


#: PTQ sweeps (:data:`calohls.quant.sweeps.SWEEPS`): integer bits at fixed total, total bits at fixed integer bits,
#: weights/biases at wide data types.
SWEEPS = SWEEP_NAMES


class PTQConfig(_Strict):
    """Options of ``calohls ptq``: post-training quantization sweeps of trained runs."""

    sweeps: tuple[SweepName, ...] = Field(SWEEPS, description="sweeps to run")
    engine: Literal["emulate", "csim"] = Field("emulate", description="bit-exact numpy emulator or hls4ml C-sim")
    clusters: int = Field(20_000, ge=10, description="test clusters of each run to evaluate on (at most)")
    trace_clusters: int = Field(2_000, ge=10, description="clusters for the per-layer differences")
    total_bits: int = Field(18, ge=2, le=64, description="total bits W of ap_fixed<W,I> in the int-bits sweep")
    int_bits: tuple[int, int] = Field((2, 16), description="integer bits I swept (inclusive) in the int-bits sweep")
    integer_bits: int = Field(
        10, ge=1, le=64, description="integer bits I of ap_fixed<W,I> in the total-bits sweep (the sum needs ~10)"
    )
    total_bits_range: tuple[int, int] = Field((10, 32), description="total bits W swept in the total-bits sweep")
    weight_integer_bits: int = Field(3, ge=1, le=32, description="integer bits of weights and biases (weights sweep)")
    weight_bits: tuple[int, int] = Field((4, 18), description="weight/bias total bits swept in the weights sweep")
    data_precision: str = Field("ap_fixed<32,14>", description="results and accumulators in the weights sweep")
    workers: int | None = Field(None, ge=1, description="local worker processes (default: one per core)")
    scheduler: str | None = Field(None, description="Dask scheduler address, or 'local' for a local Dask cluster")

    @field_validator("int_bits", "total_bits_range", "weight_bits")
    @classmethod
    def _ordered(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not 1 <= v[0] <= v[1]:
            raise ValueError(f"a sweep range must be two integers lo <= hi, both at least 1; got {v}")
        return v

    @field_validator("data_precision")
    @classmethod
    def _precision(cls, v: str) -> str:
        from calohls.quant.fixed import parse_fixed

        parse_fixed(v)  # PrecisionError (a ValueError) for a malformed or impossible type such as ap_fixed<4,8>
        return v

    @model_validator(mode="after")
    def _possible(self) -> PTQConfig:
        if "int-bits" in self.sweeps and self.int_bits[1] > self.total_bits:
            raise ValueError(
                f"integer bits up to {self.int_bits[1]} exceed total_bits={self.total_bits}: ap_fixed<"
                f"{self.total_bits},{self.int_bits[1]}> is impossible; lower int_bits or raise total_bits"
            )
        if "total-bits" in self.sweeps and self.total_bits_range[0] < self.integer_bits:
            raise ValueError(
                f"total bits from {self.total_bits_range[0]} are fewer than integer_bits={self.integer_bits}: "
                f"ap_fixed<{self.total_bits_range[0]},{self.integer_bits}> is impossible; raise the range"
            )
        if "weights" in self.sweeps and self.weight_bits[0] < self.weight_integer_bits:
            raise ValueError(
                f"weight bits from {self.weight_bits[0]} are fewer than weight_integer_bits="
                f"{self.weight_integer_bits}; raise the range"
            )
        return self


class FirmwareConfig(_Strict):
    """Options of ``calohls firmware``: RTL of a QAT model, checked bit for bit and synthesised."""

    clock_period: float = Field(2.5, gt=0, le=100, description="target clock period in ns (2.5 ns = 400 MHz)")
    latency_cutoff: float | None = Field(
        None, gt=0, description="most combinational delay per pipeline stage in ns (default: the clock period)"
    )
    clusters: int = Field(10_000, ge=1, description="test clusters checked bit for bit (Keras, C-simulation, RTL)")
    synth: bool = Field(True, description="run Yosys synth_xilinx for LUT/FF/CARRY/DSP counts and the timing estimate")
    lut_budget: int | None = Field(
        None,
        ge=1,
        description="LUTs the calibration instances may use together in the L0 system view (clusters per bunch "
        "crossing); none: 34,560 (2 % of a VU13P), in a study its lut_budget",
    )


#: Named study sizes for ``calohls run``: the built-in default fits a laptop; ``full`` reproduces the whole study.
STUDY_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "full": {
        "sim": {"events": 250_000, "seed": 7},
        "qat": {"epochs": 80, "learning_rate": 1e-3, "train_fraction": 1.0},
        "presets": ["tiny", "small", "medium", "large"],
        "betas": [1e-6, 2e-6, 4e-6, 8e-6],
        "ptq": {"clusters": 20_000, "trace_clusters": 2_000},
        "eval_clusters": 20_000,
        "firmware_designs": 4,
        "float_seeds": 3,
    },
}


#: Defaults of the study's sections where they differ from the stage commands' own (smaller, for a laptop).
STUDY_SECTION_DEFAULTS: dict[str, Any] = {
    "sim": {"events": 60_000, "seed": 1},
    # QAT starts from the float weights: a gentler learning rate keeps them, the longer run lets the weights settle at
    # the final beta; it fine-tunes on a share of the training clusters (validation and test sets stay whole)
    "qat": {"epochs": 60, "learning_rate": 1e-3, "train_fraction": 0.6},
    "ptq": {"sweeps": ["int-bits", "total-bits"], "clusters": 10_000, "trace_clusters": 1_000},
}


class StudyConfig(_Strict):
    """Options of ``calohls scan`` / ``calohls run``: the size × precision study."""

    data: Path | None = Field(None, description="cluster file to study; none: simulate it with `sim`")
    sim: SimConfig = Field(default_factory=SimConfig, description="simulation when no data file is given")
    presets: tuple[str, ...] = Field(("tiny", "small", "medium"), description="model sizes, smallest first")
    max_cells: int = Field(
        FPGA_CELLS,
        ge=1,
        le=1024,
        description="network input of every design (the FPGA's inputs): the model max_cells of its float and QAT "
        "runs (the file stores sim.max_cells)",
    )
    train: TrainConfig = Field(default_factory=TrainConfig, description="float training")
    qat: QATConfig = Field(default_factory=QATConfig, description="quantization-aware training")
    betas: tuple[float, ...] = Field(
        (2e-6,), description="EBOPs weights beta_end of the QAT runs (each run's ramp passes through a range of sizes)"
    )
    qat_checkpoints: int = Field(
        6, ge=1, description="Pareto checkpoints of each QAT run judged as designs (spread in EBOPs; the selected one)"
    )
    qat_from_float: bool = Field(
        True, description="start every QAT run from the trained float run of its size (qat.init_from)"
    )
    ptq: PTQConfig = Field(default_factory=PTQConfig, description="PTQ sweeps of the float runs")
    ptq_designs: tuple[int, ...] = Field(
        (12, 14, 16, 18, 20), description="total bits W of the PTQ designs ap_fixed<W,ptq.integer_bits> costed"
    )
    firmware: FirmwareConfig = Field(default_factory=FirmwareConfig)
    firmware_designs: int = Field(1, ge=0, description="QAT designs of the Pareto front built into checked firmware")
    eval_clusters: int = Field(10_000, ge=10, description="test clusters every design is judged on")
    lut_budget: int = Field(34_560, ge=1, description="LUT budget of a design (2 % of a VU13P)")
    latency_budget_ns: float = Field(50.0, gt=0, description="latency budget of a design in ns")
    resolution_tolerance: float = Field(0.05, ge=0, description="QAT target: resolution within this of float")
    closure_tolerance: float = Field(
        0.03, ge=0, description="QAT target: median response within this of 1 in every bin above closure_min_energy"
    )
    closure_min_energy: float = Field(2.0, ge=0, description="E_true (GeV) from which the closure is judged")
    learning_curve: tuple[float, ...] = Field(
        (0.25, 0.5),
        description="shares of the training clusters on which the smallest and the largest size are also trained "
        "(the learning curve; the whole set is the float run itself); empty: none",
    )
    float_seeds: int = Field(
        2, ge=1, le=20, description="float runs of each size with different seeds (mean and spread in the answer)"
    )
    workers: int | None = Field(None, ge=1, description="local worker processes (default: one per core)")
    scheduler: str | None = Field(None, description="Dask scheduler address, or 'local' for a local Dask cluster")

    @model_validator(mode="before")
    @classmethod
    def _section_defaults(cls, data: Any) -> Any:
        """The study's own defaults of each section, under what the user gave (section by section, so that
        ``train: {patience: 4}`` keeps the study's 30 epochs)."""
        if isinstance(data, dict):
            merged = copy.deepcopy(STUDY_SECTION_DEFAULTS)
            _merge(merged, {k: (v.model_dump() if isinstance(v, BaseModel) else v) for k, v in data.items()})
            data = merged
        return data

    @field_validator("presets")
    @classmethod
    def _known_presets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [p for p in v if p not in PRESETS]
        if unknown or not v or len(set(v)) != len(v):
            raise ValueError(f"presets must be distinct names among {', '.join(PRESETS)}; got {list(v)}")
        return v

    @field_validator("learning_curve")
    @classmethod
    def _fractions(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < f < 1 for f in v) or len(set(v)) != len(v):
            raise ValueError(f"learning_curve must be distinct shares between 0 and 1 such as 0.25; got {list(v)}")
        return tuple(sorted(v))

    @field_validator("betas")
    @classmethod
    def _positive_betas(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or min(v) <= 0:
            raise ValueError(f"betas must be positive numbers such as 1e-7; got {list(v)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> StudyConfig:
        if self.eval_clusters > self.ptq.clusters:
            raise ValueError(
                f"eval_clusters={self.eval_clusters} exceeds ptq.clusters={self.ptq.clusters}: PTQ designs are judged "
                "on the PTQ inputs; lower eval_clusters or raise ptq.clusters"
            )
        if min(self.ptq_designs, default=self.ptq.integer_bits) < self.ptq.integer_bits:
            raise ValueError(
                f"ptq_designs {list(self.ptq_designs)} hold fewer total bits than ptq.integer_bits="
                f"{self.ptq.integer_bits}: ap_fixed<W,I> needs W >= I"
            )
        return self


def validation_message(err: ValidationError, schema: type[BaseModel] | None = None) -> str:
    """One line from a pydantic error: the field, the value received and what is wrong (for an unknown option, the
    options of ``schema`` at that place and the closest one)."""
    e = err.errors()[0]
    where = ".".join(str(x) for x in e["loc"])
    msg = e["msg"].removeprefix("Value error, ")
    if not where:  # a check across several options: its message names them
        return msg
    if e["type"] == "extra_forbidden":
        known = _options_at(schema, e["loc"][:-1]) if schema else []
        close = difflib.get_close_matches(str(e["loc"][-1])[:100], known, n=1)
        msg = "unknown option" + (f" (did you mean {close[0]}?)" if close else "")
        msg += f"; known options: {', '.join(known)}" if known else "; remove it"
    return f"{shorten(where)}={shorten(repr(e.get('input')))}: {shorten(msg, 300)}"


#: Longest quote of a received value in an error message.
MAX_QUOTE = 80


def shorten(text: str, limit: int = MAX_QUOTE) -> str:
    """``text`` cut to ``limit`` characters, ending in '…' if cut (a value quoted in a one-line error)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: Most values a YAML document may hold once its aliases are expanded (a config holds a few hundred).
MAX_YAML_VALUES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing documents whose aliases expand beyond :data:`MAX_YAML_VALUES` values (a
    "billion laughs" file of a few hundred bytes would otherwise take minutes and gigabytes to validate)."""

    def compose_document(self) -> Any:
        node = super().compose_document()
        if _expanded_size(node, {}) > MAX_YAML_VALUES:
            raise yaml.YAMLError(f"aliases expand to more than {MAX_YAML_VALUES:,} values; write the values out")
        return node


def _expanded_size(node: Any, seen: dict[int, int]) -> int:
    """Values of a composed YAML node with every alias expanded (each shared node counted once per use)."""
    if id(node) in seen:
        return seen[id(node)]
    seen[id(node)] = MAX_YAML_VALUES + 1  # a node inside itself (a recursive alias) counts as too big
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, seen) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, seen) + _expanded_size(v, seen) for k, v in node.value)
    seen[id(node)] = min(size, MAX_YAML_VALUES + 1)
    return seen[id(node)]


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with a bound on alias expansion (see :class:`_BoundedLoader`)."""
    return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader subclass


def _options_at(schema: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The option names of the (nested) model at ``loc`` of ``schema``; empty if ``loc`` is not a model."""
    model: Any = schema
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        model = field.annotation if field else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return list(model.model_fields)


def load_config(
    schema: type[BaseModel],
    source: Path | dict[str, Any] | None = None,
    *,
    defaults: dict[str, Any] | None = None,
    **overrides: Any,
) -> Any:
    """Build ``schema`` from ``defaults``, then a YAML file or dict merged over them section by section, then
    command-line overrides (None values are ignored)."""
    data: dict[str, Any] = copy.deepcopy(defaults or {})
    if isinstance(source, Path):
        problem = why_not_a_file(source)
        if problem is not None:
            raise ConfigError(f"config file {source} {problem}; give the path of a YAML file")
        try:
            loaded = load_yaml(source.read_text())
        except yaml.YAMLError as exc:
            reason = shorten(" ".join(str(getattr(exc, "problem", None) or exc).split()), 120)
            raise ConfigError(
                f"config file {source} is not valid YAML ({exc.__class__.__name__}: {reason}); fix it"
            ) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {source} holds a {type(loaded).__name__}; it must be a mapping")
        _merge(data, loaded or {})
    elif isinstance(source, dict):
        _merge(data, source)
    _merge(data, overrides)
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise ConfigError(validation_message(err, schema)) from None


def _merge(data: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Apply overrides in place, section by section; None means "not given"."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            _merge(data[key], value)
        elif isinstance(value, dict):
            data[key] = {k: v for k, v in value.items() if v is not None}
        elif value is not None:
            data[key] = value


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
