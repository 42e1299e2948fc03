"""Signal front-end (DESIGN.md contracts 1 and 2), numpy only: training and the field share it.

Owns the front-end config and its hash (config), resampling to 1 kHz matching scipy's
resample_poly (resample), the pooled log spectrogram (spectrogram), both joined offline and as
a stream (frontend), and the patient tensor in the fixed site order (patient).
"""

from runtime.dsp.config import FrontEndConfig
from runtime.dsp.frontend import FrontEndStream, compute_features, features
from runtime.dsp.patient import PatientTensor, assemble_patient, stack_patients
from runtime.dsp.resample import StreamingResampler, design_filter, ratio_for, resample
from runtime.dsp.spectrogram import StreamingSpectrogram, log_spectrogram, pool_frames

__all__ = [
    "FrontEndConfig",
    "FrontEndStream",
    "PatientTensor",
    "StreamingResampler",
    "StreamingSpectrogram",
    "assemble_patient",
    "compute_features",
    "design_filter",
    "features",
    "log_spectrogram",
    "pool_frames",
    "ratio_for",
    "resample",
    "stack_patients",
]
