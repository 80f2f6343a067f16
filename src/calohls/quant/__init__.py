"""The quantization stage: fixed-point types, bit-exact emulation of the hls4ml graph, PTQ sweeps.

:mod:`calohls.quant.fixed` models the Xilinx arbitrary-precision types (``ap_fixed``, ``ap_ufixed``, ``ap_int``,
``ap_uint``) in numpy, bit-exact to their C++ headers. Import the submodules directly; this package imports nothing
heavy.
"""
