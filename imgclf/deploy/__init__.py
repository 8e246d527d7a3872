"""Taking a trained run out: export (ONNX, TorchScript), benchmark, the REST server."""
