"""Firmware bridge (stdlib + numpy; pyserial only where a port is opened).

Owns the stethoscope serial protocol (PROTOCOL.md, protocol.py), its C reference for firmware (c/),
the host's connect procedure (host.py), the virtual stethoscope (emulator.py, `pcg-bridge`), the
physiological heart-sound model it streams (heart.py, also used by pcg-synth), and the practice
patients it can play (scenarios.py, `pcg-runtime --scenario`).
"""
