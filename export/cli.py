"""pcg-export: a pcg-train run (or one fold's model.pt) -> ONNX with manifest, INT8 variants, TensorRT engine.

    pcg-export RUN_OR_CHECKPOINT --out model.onnx [--int8] [--calibration DATA_DIR] [--tensorrt] [--opset N]
               [--lodo-run LODO_RUN] [--reference-ids ID,ID,...] [--adapt-bn RECORDINGS_DIR]

Writes, beside --out:
    model.onnx                 float model, manifest embedded; model.parity.json (vs torch, real data)
    model.int8-cpu.onnx        --int8: ONNX Runtime CPU model; its .parity.json (vs float)
    model.int8-tensorrt.onnx   --int8 / --tensorrt: standard operators, symmetric Q/DQ; its .parity.json
    model.int8-tensorrt.engine --tensorrt: engine for this GPU and TensorRT; .engine.json sidecar manifest
    model.reference.json       --reference-ids: the model's probabilities on those patients (torch, trainer features)
    model.export.json          what was written, and which model to use where

--lodo-run: a pcg-train --folds lodo run with the same settings; its pooled and per-database figures go
into the manifest's metrics["leave_one_database_out"] and its command into the manifest's commands.
A LODO run made with --adapt-bn gives the figures that match the exported model: adapted ones for a
model exported with --adapt-bn, the same models' unadapted ones otherwise (the adapted ones beside).

--adapt-bn DIR: recordings of the stethoscope the model is for (a reference group of people without
heart disease measured best; labels are not read); the batch-norm statistics are re-estimated on them
before export (export/adapt.py) and the manifest's inference block says so.

Real data (the run's own data folder, or --calibration DATA_DIR holding the same patients) gives the
parity figures and the int8 calibration: see export/data.py for which patients serve which purpose.
A model that fails its parity check is not written (its .parity.json says why), and files of an earlier
export to the same --out are removed first, so nothing stale or failed is left to load. A run whose
cross-validated pooled AUROC is below 0.60 is refused unless --allow-weak-model, which the manifest records.
Exit status: 0 done, 1 a parity or compatibility check failed, 2 bad input, 3 TensorRT unavailable here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import onnx

from export.adapt import adapt_source
from export.data import MIN_CALIBRATION_PATIENTS, load_real_data
from export.manifest import build_manifest, lodo_metrics
from export.onnx_model import DEFAULT_OPSET, export_graph, with_manifest
from export.parity import float_parity, int8_report, paired_latency_ms
from export.quantize import CPU, CPU_LSTM, TENSORRT, quantize
from export.reference import reference_outputs
from export.source import SourceError, load_source, with_murmur_head
from export.tensorrt import TensorRTUnavailable, build_engine, check_tensorrt_compatible, require_tensorrt
from runtime.manifest import graph_sha256
from trainer.adapt import RECOMMENDED_RECORDINGS
from trainer.inference import ensemble_thresholds


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pcg-export", description=__doc__.split("\n\n")[0])
    from runtime.version import add_version_flag

    add_version_flag(p)
    p.add_argument("source", type=Path, help="a pcg-train --out folder (fold ensemble) or one fold's model.pt")
    p.add_argument("--out", type=Path, required=True, help="float ONNX model to write (variants go beside it)")
    p.add_argument("--int8", action="store_true", help="also write the int8 CPU and TensorRT-ready models with parity reports")
    p.add_argument("--calibration", type=Path, default=None, help="labelled data folder with the run's patients (default: the run's --data)")
    p.add_argument("--cache", type=Path, default=Path("runs") / "feature-cache", help="feature cache folder (as pcg-train)")
    p.add_argument("--tensorrt", action="store_true", help="build a TensorRT engine for the GPU here (needs tensorrt and CUDA)")
    p.add_argument("--max-batch", type=int, default=16, help="largest batch of the TensorRT optimization profile")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET}: TensorRT 8.5+ and ONNX Runtime 1.13+)")
    p.add_argument("--lodo-run", type=Path, default=None,
                   help="pcg-train --folds lodo run of the same settings: its metrics go into the manifest, labelled leave-one-database-out")
    p.add_argument("--lodo-seed-run", type=Path, action="append", default=[],
                   help="with --lodo-run: a LODO run of the same settings but another seed, recorded beside it (repeatable)")
    p.add_argument("--adapt-bn", type=Path, default=None, metavar="DIR",
                   help="recordings of the stethoscope the model will be used with, ideally of people without heart disease "
                        "(CirCor, PhysioNet 2016 or WAV folder; labels are not read): "
                        "every fold model's batch-norm statistics are re-estimated on them (AdaBN) before export; the manifest records it")
    p.add_argument("--murmur-run", type=Path, default=None, metavar="RUN",
                   help="a pcg-train --task murmur run whose murmur head joins the outcome model as a fourth output "
                        "(murmur_probabilities); the referral decision stays the outcome head's")
    p.add_argument("--sign-key", type=Path, default=None, metavar="KEY",
                   help="sign every model written with this Ed25519 private key (pcg-export keygen); boxes trust the "
                        "models of the public keys in their configuration")
    p.add_argument("--allow-weak-model", action="store_true",
                   help=f"export a model whose cross-validated pooled AUROC is below {WEAK_AUROC} (refused otherwise); "
                        "its manifest then says so, and every result's provenance shows it")
    p.add_argument("--reference-ids", default=None,
                   help="comma-separated patient ids of the run's data: write their probabilities to <out>.reference.json")
    return p


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True, default=float) + "\n")


def sibling(out: Path, suffix: str) -> Path:
    return out.with_name(out.stem + suffix)


# Every file an export may write beside --out: removed before a new export, so a model that fails its
# checks this time never leaves an earlier (or its own) loadable file behind.
WRITTEN_SUFFIXES = (".parity.json", ".reference.json", ".export.json", ".int8-cpu.onnx", ".int8-cpu.parity.json",
                    ".int8-tensorrt.onnx", ".int8-tensorrt.parity.json", ".int8-tensorrt.engine", ".int8-tensorrt.engine.json")
WEAK_AUROC = 0.60


def clear_previous_export(out: Path) -> None:
    out.unlink(missing_ok=True)
    for suffix in WRITTEN_SUFFIXES:
        sibling(out, suffix).unlink(missing_ok=True)


def weak_model_check(source, allow: bool) -> dict | None:
    """Refuse (SourceError) a run whose pooled cross-validated AUROC is below WEAK_AUROC unless allowed;
    with the override, the manifest block that says so."""
    pooled = ((source.run or {}).get("summary") or {}).get("pooled") or {}
    auroc = pooled.get("auroc")
    if not isinstance(auroc, (int, float)) or auroc >= WEAK_AUROC:
        return None
    if not allow:
        raise SourceError(f"{source.path}: cross-validated pooled AUROC {auroc:.3f} is below {WEAK_AUROC}: the model ranks patients "
                          "barely better than chance; it is not exported without --allow-weak-model")
    return {"pooled_auroc": auroc, "threshold": WEAK_AUROC,
            "note": f"exported with --allow-weak-model: cross-validated AUROC {auroc:.3f} is below {WEAK_AUROC}; "
                    "not fit for screening decisions"}


def keygen(argv: list[str]) -> int:
    """`pcg-export keygen --out DIR [--name NAME]`: a programme's signing key pair."""
    from runtime.signing import generate_keypair

    p = argparse.ArgumentParser(prog="pcg-export keygen", description="Make an Ed25519 key pair for signing models: "
                                "NAME.key (private, mode 0600: keep it on the machine that exports, never on a box or "
                                "in git) and NAME.pub (its public line, for the boxes' trusted_keys).")
    p.add_argument("--out", type=Path, required=True, help="folder to write the two files into")
    p.add_argument("--name", default="programme", help="file name stem (default: programme)")
    args = p.parse_args(argv)
    try:
        keys = generate_keypair(args.out, args.name)
    except (FileExistsError, OSError) as err:
        print(f"pcg-export keygen: {err}", file=sys.stderr)
        return 2
    print(f"private key {keys.private_path} (mode 0600; never copy it to a box)")
    print(f"public key  {keys.public_path}: key id {keys.key_id}; add this line to trusted_keys in each box's "
          f"configuration (/etc/pcg-screen/box.json):")
    print(f"  {keys.public_key}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["keygen"]:
        return keygen(argv[1:])
    args = build_parser().parse_args(argv)
    command = "pcg-export " + " ".join(argv)
    started = time.perf_counter()
    if args.sign_key is not None:
        from runtime.signing import SignatureError, signature_entry

        try:
            signature_entry("{}", args.sign_key)  # a key that cannot sign is refused before minutes of export
        except SignatureError as err:
            print(f"pcg-export: --sign-key: {err}", file=sys.stderr)
            return 2

    if args.tensorrt:
        try:
            require_tensorrt()  # before minutes of export and calibration
        except TensorRTUnavailable as err:
            print(f"pcg-export: --tensorrt: {err}", file=sys.stderr)
            return 3
    try:
        source = load_source(args.source)
        if args.murmur_run is not None:
            if args.adapt_bn or args.lodo_run:
                raise SourceError("--murmur-run takes neither --adapt-bn nor --lodo-run: the murmur run has no adaptation "
                                  "and no leave-one-database-out counterpart")
            source = with_murmur_head(source, args.murmur_run)
        calibrated_for = source.train_config.get("adapt_bn", "none")
        if calibrated_for != "none" and args.adapt_bn is None:
            raise SourceError(f"{args.source} was trained with --adapt-bn {calibrated_for}: its calibration and thresholds are for a model "
                              f"adapted to its stethoscope; pass --adapt-bn DIR with {'healthy ' if calibrated_for == 'healthy' else ''}"
                              "recordings of the stethoscope it will be used with (docs/adapt-to-a-stethoscope.md)")
        if args.adapt_bn is not None:
            source.adaptation = adapt_source(source, args.adapt_bn)
            print(f"pcg-export: batch-norm statistics adapted to {source.adaptation['recordings_used']} recordings of "
                  f"{source.adaptation['patients']} patients in {args.adapt_bn}", file=sys.stderr)
            if source.adaptation["recordings_used"] < RECOMMENDED_RECORDINGS:
                print(f"pcg-export: warning: only {source.adaptation['recordings_used']} recordings; statistics from "
                      f"{RECOMMENDED_RECORDINGS} or more are steadier", file=sys.stderr)
        float_graph = export_graph(source, args.opset)
        if args.lodo_seed_run and not args.lodo_run:
            raise SourceError("--lodo-seed-run needs --lodo-run (the LODO run of the exported ensemble's own seed)")
        lodo = lodo_metrics(source, args.lodo_run, tuple(args.lodo_seed_run)) if args.lodo_run else None
        weak = weak_model_check(source, args.allow_weak_model)
        manifest = build_manifest(source, (command,), lodo=lodo, weak=weak)
        quantizing = args.int8 or args.tensorrt
        data = load_real_data(source, args.calibration, args.cache, min_calibration=MIN_CALIBRATION_PATIENTS if quantizing else 0)
    except (SourceError, ValueError, FileNotFoundError) as err:
        print(f"pcg-export: {err}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    clear_previous_export(args.out)
    float_bytes = signed(with_manifest(float_graph, manifest), args.sign_key)
    parity = {"data": {"dataset": data.dataset, "note": data.note}, **float_parity(source, float_bytes, data.evaluation)}
    _write_json(sibling(args.out, ".parity.json"), parity)
    if not parity["passed"]:  # nothing that loads is left behind; the parity report says why
        print(f"pcg-export: FAILED float parity: max |p_onnx - p_torch| {parity['max_abs_difference']['outcome_probability']:.2e}; "
              f"{args.out} not written", file=sys.stderr)
        return 1
    args.out.write_bytes(float_bytes)
    if args.sign_key is None:
        print("pcg-export: note: no --sign-key: the models are unsigned, and boxes refuse them unless told explicitly "
              "(--allow-unsigned-model)", file=sys.stderr)
    written = {"float": {"path": args.out.name, "use": "ONNX Runtime (CPU or GPU); the reference", "parity": parity["passed"]}}
    if args.reference_ids:
        ids = [i.strip() for i in args.reference_ids.split(",") if i.strip()]
        try:
            reference = reference_outputs(source, ids, data.run, graph_sha256(float_bytes))
        except ValueError as err:
            print(f"pcg-export: {err}", file=sys.stderr)
            return 2
        _write_json(sibling(args.out, ".reference.json"), reference)
        written["reference"] = {"path": sibling(args.out, ".reference.json").name, "patients": len(ids)}
    failed = []
    print(f"pcg-export: {args.out} ({len(float_bytes) / 1e6:.2f} MB), max |p_onnx - p_torch| "
          f"{parity['max_abs_difference']['outcome_probability']:.1e} over {parity['patients']} patients", file=sys.stderr)

    thresholds = ensemble_thresholds(source.checkpoints)
    trt_bytes = None
    if quantizing:
        variants = [TENSORRT] if not args.int8 else [CPU, TENSORRT]
        for variant in variants:
            int8, path, report = _int8_model(source, float_graph, float_bytes, data, variant, thresholds, command, args.out, lodo, weak,
                                             args.sign_key)
            written[f"int8_{variant.name}"] = {"path": path.name, "use": report["use"], "parity": report["passed"]}
            if not report["passed"]:
                failed.append(f"int8 {variant.name} parity: AUROC difference {report['auroc_difference']:+.4f}, "
                              f"triage agreement {min(p['triage_agreement'] for p in report['operating_points'].values()):.4f}"
                              + (f", murmur class agreement {report['murmur_head']['class_agreement']:.4f}" if "murmur_head" in report else ""))
            if variant is TENSORRT and report["passed"]:
                problems = check_tensorrt_compatible(onnx.load_from_string(int8))
                failed += [f"TensorRT compatibility: {p}" for p in problems]
                trt_bytes = None if problems else int8
    if args.tensorrt and trt_bytes is not None:
        trt_manifest = manifest_of(trt_bytes)
        engine, sidecar = build_engine(trt_bytes, trt_manifest, args.max_batch)
        engine_path = sibling(args.out, ".int8-tensorrt.engine")
        engine_path.write_bytes(engine)
        engine_path.with_name(engine_path.name + ".json").write_text(sidecar.to_json())
        written["tensorrt_engine"] = {"path": engine_path.name, "use": f"TensorRT {sidecar.inference['engine']['tensorrt_version']} "
                                      f"on {sidecar.inference['engine']['gpu']} only", "sidecar": engine_path.name + ".json"}
    _write_summary(args.out, written, started, command)
    for problem in failed:
        print(f"pcg-export: FAILED {problem}", file=sys.stderr)
    return 1 if failed else 0


def manifest_of(model_bytes: bytes):
    from runtime.manifest import MANIFEST_KEY, ModelManifest

    props = {p.key: p.value for p in onnx.load_from_string(model_bytes).metadata_props}
    return ModelManifest.from_json(props[MANIFEST_KEY])


def signed(model_bytes: bytes, key: Path | None) -> bytes:
    """`model_bytes` signed with `key` (runtime.signing), or as they are without one."""
    if key is None:
        return model_bytes
    from runtime.signing import sign_model

    return sign_model(model_bytes, key)


def _int8_model(source, float_graph: bytes, float_bytes: bytes, data, variant, thresholds, command: str, out: Path, lodo: dict | None,
                weak: dict | None, sign_key: Path | None = None):
    """Quantize, embed the manifest, write the model and its parity report. For the CPU model the
    LSTM is dynamically quantized only where that is measured to be faster (runs interleaved)."""
    made = []
    for candidate in [variant] if variant is not CPU else [CPU, CPU_LSTM]:
        int8_graph, description = quantize(float_graph, source, data.calibration, candidate, data.note)
        made.append((signed(with_manifest(int8_graph, build_manifest(source, (command,), variant=description, lodo=lodo, weak=weak)),
                            sign_key), description))
    alternative = None
    if len(made) > 1:
        latencies = paired_latency_ms([m for m, _ in made], next(data.evaluation.batches(1)))
        order = sorted(range(len(made)), key=latencies.__getitem__)
        alternative = {"variant": made[order[1]][1]["quantized_ops"], "latency_ms_batch1_1thread": latencies[order[1]],
                       "kept_latency_ms_batch1_1thread": latencies[order[0]], "size_bytes": len(made[order[1]][0])}
        made = [made[order[0]]]
    int8, description = made[0]
    report = int8_report(float_bytes, int8, data, thresholds)
    report["variant"] = description
    if alternative:
        report["alternative_not_kept"] = alternative
    ratio = report["latency_ratio"]
    if variant is TENSORRT:
        report["use"] = "TensorRT engine builds (explicit quantization); runs in ONNX Runtime too, for this report"
    elif ratio >= 1.0:
        report["use"] = (f"not recommended on this CPU: int8 takes {ratio:.2f}x the float latency at batch 1 "
                         "(benchmarks/export.py gives the time per operator: at 8-32 channels the Q/DQ nodes can cost more than "
                         "the int8 convolutions save); use the float model")
    else:
        report["use"] = f"ONNX Runtime on CPU: {1 / ratio:.2f}x faster than float at batch 1, one thread"
    path = sibling(out, f".int8-{variant.name}.onnx")
    if report["passed"]:
        path.write_bytes(int8)
    else:  # a model that failed its parity check is not left on disk to be loaded
        report["use"] = f"not written: it failed its parity check against the float model ({path.name} does not exist)"
    _write_json(path.with_name(path.stem + ".parity.json"), report)
    print(f"pcg-export: {path} ({report['size_ratio']:.2f}x size, {ratio:.2f}x latency), AUROC {report['auroc_float']:.4f} -> "
          f"{report['auroc_int8']:.4f}, triage agreement {min(p['triage_agreement'] for p in report['operating_points'].values()):.4f}",
          file=sys.stderr)
    return int8, path, report


def _write_summary(out: Path, written: dict, started: float, command: str) -> None:
    cpu = written.get("int8_cpu")
    recommended = cpu["path"] if cpu and not cpu["use"].startswith("not recommended") and cpu["parity"] else written["float"]["path"]
    _write_json(sibling(out, ".export.json"), {"command": command, "written": written, "cpu_model": recommended,
                                               "seconds": time.perf_counter() - started})


if __name__ == "__main__":
    raise SystemExit(main())
