"""The benchmark harness behind ``benchmarks/bench.py``, one job per module.

- ``cases``: the cells and the case grids (main table full/quick, normalization section,
  float16-weights section).
- ``data``: the shared inputs and the weights used when no backend creates them.
- ``torch_ops``: the normalized LSTM written with PyTorch operations.
- ``onnx_models``: ONNX graphs of one recurrent layer, and their ONNX Runtime sessions.
- ``backends``: one class per benchmarked implementation (rnncore, torch, ONNX Runtime).
- ``timing``: interleaved timing rounds, quiet windows, wake-up calls, medians, the SGEMM peak.
- ``sgemm_peak``: the child program that measures the SGEMM peak (``python -m``).
- ``checks``: the numeric cross-checks and their tolerances.
- ``runner``: runs one case (or one normalization-cost row, or one float16 row).
- ``targets``: the speed targets and their summaries.
- ``report``: the machine header, the tables and the CSV files.
- ``sections``: the normalization and float16-weights sections.

Nothing is imported here, so that ``python -m rnnbench.sgemm_peak`` loads only NumPy.
"""
