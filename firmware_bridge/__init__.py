"""Firmware bridge (stdlib + numpy): the stethoscope serial protocol, its C reference, the virtual
stethoscope and the physiological heart-sound model it streams (also used by pcg-synth)."""
