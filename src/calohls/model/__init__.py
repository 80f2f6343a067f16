"""The DeepSets calibration network: build, train, predict (Keras 3 on the JAX backend, set in ``calohls``)."""
