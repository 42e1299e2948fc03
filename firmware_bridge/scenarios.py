"""Practice patients for the virtual stethoscope: `pcg-runtime --device sim --scenario NAME`.

A health worker learns the screens by meeting each situation once: a healthy child, a murmur, a
noisy room, a chest piece that does not touch the skin, a cable pulled out mid-recording, a battery
running flat. Each scenario is what the virtual stethoscope plays (a heart-model profile, the
link's faults, the battery it reports); everything after the serial port (the front-end, the
quality gate, the model, the screens) is the real program, so a practice result is whatever the
model and the gate make of the audio, never a scripted answer.

    setup = scenario("murmur", seed=0, speed=20.0)
    Emulator(link=..., seed=0, speed=20.0, profile=setup.profile, faults=setup.faults, battery=setup.battery)

Levels were chosen on the quality gate (runtime.quality), checked on seeds 0-9 at 6 and 10 s a site:
"normal", "murmur", "unplug" and "low-battery" pass at every site; "noisy" fails every site with
"noise" (a steady hiss at about -18 dBFS, the heartbeat under it), "bad-contact" with
"disconnected" (about -70 dBFS; the gate's floor is -65).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from firmware_bridge.emulator import Battery, Faults
from firmware_bridge.heart import HeartProfile, Murmur, random_profile

#: How long the "unplug" scenario's cable stays out, in real seconds whatever --speed is: long
#: enough to read the screen's guidance, shorter than the box's 60 s wait for a stethoscope.
UNPLUG_REAL_S = 3.0
SCENARIOS: dict[str, str] = {
    "normal": "a healthy child in a quiet room",
    "murmur": "a child with a loud holosystolic murmur (a ventricular septal defect's), heard at every site",
    "noisy": "a healthy child in a noisy room (a fan or an engine): the quality check asks for retakes",
    "bad-contact": "the chest piece does not rest on the skin: almost no signal, the quality check asks for retakes",
    "unplug": "a healthy child; the cable comes out 2 s into recording the second site (PV) and is plugged back "
              f"in {UNPLUG_REAL_S:g} s later",
    "low-battery": "a healthy child; the stethoscope's battery starts at 15 % and is at 8 % by the third site",
}
#: A murmur a clinician would refer: grade III/VI, harsh, through the whole of systole.
VSD_MURMUR = Murmur(timing="Holosystolic", shape="Plateau", pitch="Medium", grade="III/VI", quality="Harsh")


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    profile: HeartProfile
    faults: Faults = Faults()
    battery: Battery = Battery()


def quiet(profile: HeartProfile) -> HeartProfile:
    """The same heart in a quiet room, the child still: no talking, mains hum or friction bursts,
    so only what the scenario adds can fail the quality check."""
    return replace(profile, ambient_level=0.0, hum_level=0.0, contact_rate_hz=0.0)


def scenario(name: str, seed: int = 0, speed: float = 1.0) -> Scenario:
    """The scenario `name` (one of SCENARIOS) for the child drawn from `seed` (heart rate, sound
    pitches), on an emulator running `speed` times real time."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown practice scenario {name!r}; scenarios are {', '.join(SCENARIOS)}")
    rng = np.random.default_rng(seed)
    if name == "murmur":
        profile = random_profile(rng, "Child", systolic_murmur=VSD_MURMUR, murmur_sites=("AV", "PV", "TV", "MV"),
                                 most_audible_site="TV")  # a VSD is loudest at the left lower sternal border
        return Scenario(name, SCENARIOS[name], quiet(profile))
    child = quiet(random_profile(rng, "Child"))
    if name == "noisy":
        return Scenario(name, SCENARIOS[name], replace(child, floor_level=0.12))
    if name == "bad-contact":
        return Scenario(name, SCENARIOS[name], replace(child, amplitude=0.002, breath_level=0.0, floor_level=0.0002))
    if name == "unplug":
        return Scenario(name, SCENARIOS[name], child,
                        faults=Faults(unplug_at_site="PV", unplug_after_s=2.0, reconnect_after_s=UNPLUG_REAL_S * speed))
    if name == "low-battery":
        # 15 % at power-on, 2.4 % less for each site recorded: 13, 11, 8, 6 % over AV, PV, TV and MV, so
        # the box warns at the first site (20 %: charge it after this patient) and the third (10 %: now)
        return Scenario(name, SCENARIOS[name], child,
                        battery=Battery(start_pct=15.0, drain_pct_per_s=0.0, drain_pct_per_site=2.4))
    return Scenario(name, SCENARIOS[name], child)
