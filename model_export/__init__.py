"""intentflow model path: point-in-time datasets, training, ONNX export and evaluation."""
