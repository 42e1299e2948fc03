"""Decisions nobody can edit: the manifest (operating points, statistics, graph hash) is covered by
an Ed25519 signature or, for the bundled model, by a hash pinned in the package; the box trusts the
keys in its configuration and refuses the rest unless told explicitly, saying which.

Signed models here are copies of the bundled model signed with a key made for the test (the same
code path pcg-export --sign-key takes: runtime.signing.sign_model); tests/test_export_safety.py
signs a freshly exported ensemble.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.inference import Model, ModelError, default_model_path
from runtime.manifest import MANIFEST_KEY, ModelManifest, embed_metadata, metadata_entries
from runtime.signing import SIGNATURE_KEY, generate_keypair, sign_model

RUNTIME = [sys.executable, "-m", "runtime.cli"]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(RUNTIME + list(args), capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PCG_SCREEN_CONFIG": "", **(env or {})})


def with_threshold(model_bytes: bytes, threshold: float) -> bytes:
    """The attack of the issue: cost_optimal set in metadata_props, the graph and everything else untouched."""
    text = metadata_entries(model_bytes)[MANIFEST_KEY]
    data = json.loads(text)
    data["operating_points"]["cost_optimal"]["threshold"] = threshold
    return embed_metadata(model_bytes, MANIFEST_KEY, json.dumps(data, sort_keys=True, indent=1))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return generate_keypair(tmp_path_factory.mktemp("keys"), "programme")


@pytest.fixture
def signed_model(tmp_path, keys) -> Path:
    path = tmp_path / "signed.onnx"
    path.write_bytes(sign_model(default_model_path().read_bytes(), keys.private_path))
    return path


def box_config(tmp_path: Path, **settings) -> Path:
    path = tmp_path / "box.json"
    path.write_text(json.dumps(settings))
    path.chmod(0o644)
    return path


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path):
    pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[export]'); pcg-export needs it")
    done = subprocess.run([sys.executable, "-m", "export.cli", "keygen", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "programme.key").stat().st_mode) == 0o600
    public = (tmp_path / "programme.pub").read_text().strip()
    assert public.startswith("ed25519:") and public in done.stdout
    again = subprocess.run([sys.executable, "-m", "export.cli", "keygen", "--out", str(tmp_path)],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "never overwritten" in again.stderr


def test_the_bundled_model_is_trusted_by_its_pinned_hash():
    model = Model.load()
    assert model.trust.kind == "bundled" and model.trust.trusted
    done = run("model")
    assert done.returncode == 0 and "trust: the bundled model" in done.stdout


def test_an_edited_threshold_in_the_bundled_model_is_refused(tmp_path):
    """Setting cost_optimal to 0.99 used to give a file `pcg-runtime model` called verified."""
    edited = tmp_path / "edited.onnx"
    edited.write_bytes(with_threshold(default_model_path().read_bytes(), 0.99))
    assert Model.load(edited).trust.kind == "unsigned"  # no longer the pinned bytes
    done = run("model", "--model", str(edited))
    assert done.returncode == 3 and "is unsigned: nobody vouches" in done.stderr, done.stderr
    done = run("--device", "sim", "--no-store", "--yes", "--model", str(edited))
    assert done.returncode == 3 and "--allow-unsigned-model" in done.stderr


def test_a_signed_model_is_used_only_where_its_key_is_trusted(tmp_path, signed_model, keys):
    assert Model.load(signed_model).trust.kind == "signed"
    untrusted = run("model", "--model", str(signed_model))
    assert untrusted.returncode == 3 and f"signed by key {keys.key_id}, which this box does not trust" in untrusted.stderr
    config = box_config(tmp_path, trusted_keys=[keys.public_key])
    trusted = run("model", "--model", str(signed_model), "--config", str(config))
    assert trusted.returncode == 0, trusted.stderr
    assert f"trust: signed by key {keys.key_id} (trusted by this box)" in trusted.stdout
    through_env = run("model", "--model", str(signed_model), env={"PCG_SCREEN_CONFIG": str(config)})
    assert through_env.returncode == 0


def test_an_edited_signed_model_is_refused_even_when_unsigned_models_are_allowed(tmp_path, signed_model, keys):
    edited = tmp_path / "edited.onnx"
    edited.write_bytes(with_threshold(signed_model.read_bytes(), 0.99))  # the signature entry stays, now wrong
    with pytest.raises(ModelError, match="does not match the model's manifest"):
        Model.load(edited)
    config = box_config(tmp_path, trusted_keys=[keys.public_key], allow_unsigned_models=True)
    done = run("model", "--model", str(edited), "--config", str(config), "--allow-unsigned-model")
    assert done.returncode == 3 and "changed after signing" in done.stderr


def test_new_weights_with_a_re_embedded_manifest_do_not_pass_as_signed(tmp_path, signed_model, keys):
    """The graph hash is declared by the file; the signature over the manifest is what pins it."""
    import numpy as np

    onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[export]'); the test edits weights with it")
    from onnx import numpy_helper

    proto = onnx.load_from_string(signed_model.read_bytes())
    weight = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 0.5, weight.name))
    props = {p.key: p.value for p in proto.metadata_props}
    del proto.metadata_props[:]
    changed = proto.SerializeToString()
    from runtime.manifest import embed_manifest

    manifest = ModelManifest.from_json(props[MANIFEST_KEY])
    re_embedded = embed_manifest(changed, manifest)  # the honest tool drops the old signature: unsigned
    assert SIGNATURE_KEY not in metadata_entries(re_embedded)
    forged = embed_metadata(re_embedded, SIGNATURE_KEY, props[SIGNATURE_KEY])  # the old signature copied over
    (tmp_path / "re-embedded.onnx").write_bytes(re_embedded)
    (tmp_path / "forged.onnx").write_bytes(forged)
    config = box_config(tmp_path, trusted_keys=[keys.public_key])
    assert Model.load(tmp_path / "re-embedded.onnx").trust.kind == "unsigned"
    assert run("model", "--model", str(tmp_path / "re-embedded.onnx"), "--config", str(config)).returncode == 3
    with pytest.raises(ModelError, match="changed after signing"):
        Model.load(tmp_path / "forged.onnx")


def test_an_untrusted_model_allowed_explicitly_says_so_with_every_result(tmp_path):
    edited = tmp_path / "edited.onnx"
    edited.write_bytes(with_threshold(default_model_path().read_bytes(), 0.5))
    done = run("--device", "sim", "--no-store", "--yes", "--json", "--speed", "50", "--model", str(edited),
               "--allow-unsigned-model")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["result"]
    assert any(note.startswith("untrusted model (UNSIGNED") for note in result["unused"])
    assert result["model"]["trust"].startswith("UNSIGNED")


@pytest.mark.parametrize("content, mode, phrase", [
    ('{"trusted_keys": []}', 0o666, "can be changed by other users"),
    ('{"trusted_keys": ["ed25519:short"]}', 0o644, "is not an Ed25519 public key"),
    ('{"trusted": []}', 0o644, "unknown keys"),
    ('{"allow_unsigned_models": "yes"}', 0o644, "must be true or false"),
    ("[", 0o644, "not valid JSON"),
    ('{"referral": "the hospital"}', 0o644, "referral must be an object such as"),
    ('{"referral": {"place": "Hospital X", "phone": "0800"}}', 0o644, "referral has unknown keys ['phone']"),
    ('{"referral": {"within_days": 30}}', 0o644, "referral.place must be text of 1 to 200 characters"),
    ('{"referral": {"place": "  "}}', 0o644, "referral.place must be text of 1 to 200 characters"),
    ('{"referral": {"place": "Hospital X", "within_days": 0}}', 0o644, "referral.within_days must be a whole number"),
    ('{"referral": {"place": "Hospital X", "within_days": "30"}}', 0o644, "referral.within_days must be a whole number"),
    ('{"referral": {"place": "Hospital X", "note": "line one\\nline two"}}', 0o644, "referral.note must be text"),
])
def test_a_box_configuration_that_cannot_be_trusted_is_refused(tmp_path, content, mode, phrase):
    path = tmp_path / "box.json"
    path.write_text(content)
    path.chmod(mode)
    done = run("model", "--config", str(path))
    assert done.returncode == 2 and phrase in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_box_configuration_says_where_and_how_soon_children_are_referred(tmp_path):
    from runtime.config import load_box_config

    assert load_box_config(box_config(tmp_path)).referral is None  # the kiosk then names a generic place
    place = "Ambulatório de Cardiologia Pediátrica, Hospital Regional"
    config = load_box_config(box_config(tmp_path, referral={"place": f" {place} ", "within_days": 30}))
    assert config.referral == {"place": place, "within_days": 30, "note": None}
    config = load_box_config(box_config(tmp_path, referral={"place": place, "note": "Agende pelo telefone 0800"}))
    assert config.referral == {"place": place, "within_days": None, "note": "Agende pelo telefone 0800"}
