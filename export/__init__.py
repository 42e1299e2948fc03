"""Export: checkpoint -> ONNX with manifest -> INT8 -> TensorRT engine, each with a parity proof."""
