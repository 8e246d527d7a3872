"""Prediction: the Predictor base, the PyTorch, ONNX and ensemble predictors, TTA, decisions, inputs and outputs."""
