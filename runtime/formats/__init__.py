"""Recording formats: WAV files, the CirCor 2022 layout, the PhysioNet 2016 layout, plain WAV folders."""

from runtime.formats.errors import FormatError
from runtime.formats.wav import WavHeader, read_wav, read_wav_header, write_wav

__all__ = ["FormatError", "WavHeader", "read_wav", "read_wav_header", "write_wav"]
