"""pcg-screen runtime: the lean field program (numpy, onnxruntime, pyserial; never torch or scipy).

Owns the signal front-end (`runtime.dsp`), the recording formats and their readers/writers
(`runtime.formats`, `runtime.records`), the demographics encoding (`runtime.metadata`), the model
manifest (`runtime.manifest`), the field store (`runtime.store`) and the field CLI (`runtime.cli`).
A screening aid for research use, not a diagnosis.
"""
