"""Scoring: ONNX propensity models loaded once per plan and run in onnxruntime."""
