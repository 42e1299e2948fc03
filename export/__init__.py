"""Export: checkpoint -> ONNX with manifest -> INT8 -> TensorRT engine, each with a parity proof.

    source       a pcg-train run (fold ensemble) or one fold's model.pt -> the inference graph
    manifest     the runtime's ModelManifest filled from the run
    onnx_model   float ONNX (TorchScript exporter, opset 17, dynamic batch), manifest embedded
    data         real patients for calibration and parity (never the evaluation fold for calibration)
    quantize     int8: ONNX Runtime CPU model and TensorRT-ready symmetric Q/DQ model
    parity       float vs torch, int8 vs float (AUROC, cost, triage agreement, size, latency)
    tensorrt     compatibility check (anywhere) and engine build (GPU + tensorrt, imported lazily)
    cli          pcg-export
"""
