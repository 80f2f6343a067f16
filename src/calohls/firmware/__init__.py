"""FPGA firmware of the DeepSets networks: hls4ml conversion, C simulation, HLS projects and synthesis reports."""
