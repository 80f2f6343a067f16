"""DeepSets in Keras 3, built only from layers hls4ml converts.

``x[N, F] → Φ (bias-free Dense + ReLU, per cell) → KSum → F (Dense + ReLU) → Dense(1)``.

* Φ is a stack of ``Dense`` layers on the ``(N, F)`` input: Keras applies them to every cell (hls4ml turns them
  into pointwise convolutions).
* Padding: padded cells are all-zero inputs, and every Φ layer is bias-free with ReLU, so a padded cell stays
  exactly zero through Φ — also in fixed point — and adds nothing to the sum. Real cells get their bias from the
  constant ``real`` input feature (:mod:`calohls.data.features`). No mask input or multiply layer is needed, which
  keeps the graph convertible and the FPGA free of a masking multiplier per cell.
* KSum: ``GlobalAveragePooling1D`` named ``ksum``. The average is the sum divided by the fixed N, a constant that
  the first F layer absorbs (hls4ml cannot convert a plain sum over an axis); N is kept a power of two by default
  so the division is a shift in firmware.
"""

from __future__ import annotations

import keras

from calohls.config import ModelConfig
from calohls.errors import ConfigError

__all__ = ["EM_HEAD", "build_deepsets", "layer_names", "with_em_head"]

#: Name of the training-only head that predicts the probability that a cluster is electromagnetic (π0, γ).
EM_HEAD = "em_probability"


def build_deepsets(config: ModelConfig, n_features: int, *, seed: int = 0, output_mean: float = 0.0) -> keras.Model:
    """A DeepSets regression model for ``config.max_cells`` cells of ``n_features`` features each.

    The output layer starts near the constant ``output_mean`` (the mean training target), so training spends no
    epochs finding the offset.
    """
    if n_features < 1:
        raise ConfigError(f"n_features={n_features} must be at least 1")
    init = keras.initializers.HeNormal(seed=seed)
    cells = keras.Input((config.max_cells, n_features), name="cells")
    h = cells
    for i, width in enumerate(config.phi_widths, start=1):
        h = keras.layers.Dense(
            width, use_bias=False, activation=config.activation, kernel_initializer=init, name=f"phi_{i}"
        )(h)
    h = keras.layers.GlobalAveragePooling1D(name="ksum")(h)
    for i, width in enumerate(config.f_widths, start=1):
        h = keras.layers.Dense(width, activation=config.activation, kernel_initializer=init, name=f"f_{i}")(h)
    out = keras.layers.Dense(
        1,
        kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3, seed=seed),
        bias_initializer=keras.initializers.Constant(output_mean),
        name="output",
    )(h)
    name = "deepsets_" + "x".join(map(str, config.phi_widths)) + "_" + "x".join(map(str, config.f_widths))
    return keras.Model(cells, out, name=name)


def layer_names(model: keras.Model) -> list[str]:
    """Names of the model's layers after the input, in order (Φ layers, ksum, F layers, output)."""
    return [layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]


def with_em_head(model: keras.Model, *, seed: int = 0) -> keras.Model:
    """A training model around ``model``: its energy output and a sigmoid head, on the last hidden F layer, that
    predicts whether the cluster is electromagnetic (LCW's classification, learnt). The head only shapes the shared
    layers during training; ``model`` itself stays the one-output network that is saved, quantized and put on the
    FPGA."""
    hidden = model.get_layer("output").input
    em = keras.layers.Dense(1, activation="sigmoid", kernel_initializer=keras.initializers.HeNormal(seed=seed),
                            name=EM_HEAD)(hidden)  # fmt: skip
    return keras.Model(model.inputs, {"output": model.outputs[0], EM_HEAD: em}, name=f"{model.name}_training")
