"""MODEL.md, the model card of a bundle: what the model is, what it was trained on and for how long,
its scores with their CIs, its calibration, how to run it, and its limits. Written from the
manifest alone, so the card never says more than the bundle holds."""

from __future__ import annotations

from typing import Any


def _fmt(x: Any, digits: int = 4, g: bool = False) -> str:
    """A number for the card: fixed ``digits`` decimals, or ``digits`` significant ones (``g``); n/a for None."""
    if x is None:
        return "n/a"
    return (f"{x:.{digits}g}" if g else f"{x:.{digits}f}") if isinstance(x, float) else str(x)


def _score_lines(v: dict[str, Any]) -> list[str]:
    if v.get("mean") is None:
        return ["No validation score: the run was never scored."]
    ci = v.get("ci95")
    ci_text = f", 95% bootstrap CI [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else " (no CI)"
    lines = [f"- {v['metric']}: **{v['mean']:.4f}**{ci_text}, on {v.get('n_events') or '?'} events of split "
             f"`{v.get('split')}` (batches {v.get('batches')}) of `{v.get('data')}`; from {v.get('source')}."]
    if v.get("median") is not None:
        lines.append(f"- median angular error: {v['median']:.4f} rad")
    if v.get("linefit_mean") is not None:
        imp = v.get("improvement_ci95")
        lines.append(f"- LineFit on the same events: {v['linefit_mean']:.4f} rad"
                     + (f" (LineFit - model, paired 95% CI [{imp[0]:.4f}, {imp[1]:.4f}])" if imp else ""))
    return lines


def _calibration_lines(cal: dict[str, Any] | None) -> list[str]:
    if not cal:
        return ["None: kappa is the model's raw output (icezoo calibrate RUN fits a map; export again after)."]
    lines = [f"kappa map `{cal.get('form')}` a * kappa^b with a = {_fmt(cal.get('a'), g=True)}, b = {_fmt(cal.get('b'), g=True)}, "
             f"then a cone-level map; fitted on {cal.get('fit_events')} validation events, checked on "
             f"{cal.get('check_events')} others (`{cal.get('data')}`, batches {cal.get('batches')})."]
    before, after = cal.get("coverage_before") or {}, cal.get("coverage_after") or {}
    for level in sorted(after, key=float):
        lines.append(f"- {float(level):.0%} cone: held-out coverage {_fmt(before.get(level), 3)} raw -> "
                     f"{_fmt(after.get(level), 3)} calibrated")
    return lines


def _run_snippet(m: dict[str, Any]) -> str:
    if m["model"]["format"] != "onnx":
        return ("```python\nimport torch\nmodel = torch.jit.load(\"model.pt\")\n"
                f"outputs = model({', '.join(i['name'] for i in m['inputs'])})  # tensors as in 'Inputs'\n```")
    feeds = ", ".join(f'"{i["name"]}": {i["name"]}' for i in m["inputs"])
    return ("```python\nimport onnxruntime as ort\nsession = ort.InferenceSession(\"model.onnx\")\n"
            f"{', '.join(o['name'] for o in m['outputs'])} = session.run(None, {{{feeds}}})\n```")


def model_card(m: dict[str, Any]) -> str:
    """The text of MODEL.md for the manifest ``m``."""
    p, t, det, sel = m["pipeline"], m["training"], m["detector"], m["selection"]
    simulated = "simulat" in str(t.get("data", "")).lower() or "sim" in str(t.get("data", "")).split("/")[-1]
    out = [f"# {p['name']}: IceCube direction reconstruction ({m['model']['format']})", "",
           p.get("description") or "", "",
           f"Exported by icezoo {m['versions'].get('icezoo')} (torch {m['versions'].get('torch')}) from run "
           f"`{m['run']['name']}`, {m['run']['checkpoint']} checkpoint; bundle format {m['format_version']}. "
           f"Model file `{m['model']['file']}`, SHA-256 `{m['model']['sha256']}`.", "",
           "## Training data and budget", "",
           f"- data: `{t.get('data')}`, batches {t.get('train_batches')}"
           + (f", pulse map `{t['pulsemap']}`" if t.get("pulsemap") else ""),
           f"- {t.get('step')} optimiser steps, {t.get('events_seen')} events seen, {t.get('train_time_s')} s on "
           f"{t.get('device')} ({t.get('precision')})", "",
           "## Scores", "", *_score_lines(m["validation"]), "",
           "Scores on simulated events are not Kaggle scores and do not transfer to real data as they are.", "",
           "## Calibration", "", *_calibration_lines(m.get("calibration")), "",
           "## Inputs", "",
           f"Pulses are selected by `{sel['name']}` (at most {sel['max_pulses']} per event; events with fewer "
           f"than {m.get('min_pulses', 2)} pulses are not for this model), then the features "
           f"{', '.join('`' + f['name'] + '`' for f in m['features'])} give the columns "
           f"{', '.join(m['feature_columns'])} (manifest.json lists every parameter).", "",
           *[f"- `{i['name']}` {i['dtype']} {i['shape']}: {i['meaning']}" for i in m["inputs"]], "",
           "## Outputs", "", *[f"- `{o['name']}` {o['shape']}: {o['meaning']}" for o in m["outputs"]], "",
           "## Run it", "", _run_snippet(m), "",
           "or with the whole reading, selection and features: `icezoo predict --model BUNDLE --data DIR --out f.csv`.",
           "", "## Limits", "",
           f"- detector: {det['name']} ({det.get('from')}); icezoo predict --model refuses data from another detector.",
           f"- at most {sel['max_pulses']} pulses per event are seen; longer events are cut by the selection.",
           "- trained on " + ("simulated events (icezoo's simulator): expect a worse resolution on real data"
                              if simulated else "the data above; check it matches yours"),
           f"- outputs match the torch model within {m['parity']['tolerance']:g} (max |diff| "
           f"{m['parity']['max_abs_diff']:.1e} at export, relative above 1); float32 only." if m.get("parity") else "",
           ""]
    return "\n".join(out)


def describe_bundle(m: dict[str, Any], path: str) -> str:
    """``icezoo show BUNDLE``: the manifest, readably (manifest.json holds every field)."""
    v, t, det, cal = m["validation"], m["training"], m["detector"], m.get("calibration")
    ci = v.get("ci95")
    score = "none" if v.get("mean") is None else f"{v['mean']:.4f} rad" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
    lines = [
        f"bundle     {path} (format_version {m['format_version']}, created {m.get('created')})",
        f"model      {m['model']['file']} ({m['model']['format']}"
        + (f", opset {m['model']['opset']}" if m["model"].get("opset") else "")
        + f", {m['model'].get('bytes', 0):,} bytes, sha256 {m['model']['sha256'][:16]}... verified)",
        f"pipeline   {m['pipeline']['name']}: {m['pipeline'].get('description') or ''}",
        f"run        {m['run']['name']} ({m['run']['checkpoint']} checkpoint, status {m['run'].get('status')})",
        f"detector   {det['name']} (pad sensor {det.get('pad_sensor')}; from {det.get('from')})",
        f"selection  {m['selection']['name']} {_params(m['selection']['params'])}",
    ]
    for f in m["features"]:
        kind = "event" if f.get("event_level") else "pulse"
        lines.append(f"features   {f['name']} {_params(f['params'])} -> {kind} columns {', '.join(f['columns'])}")
    for i in m["inputs"]:
        lines.append(f"input      {i['name']:<15}{i['dtype']:<8}{i['shape']}  {i['meaning']}")
    for o in m["outputs"]:
        lines.append(f"output     {o['name']:<15}{o['dtype']:<8}{o['shape']}  {o['meaning']}")
    lines += [
        f"score      {v.get('metric')}: {score} on {v.get('n_events') or '?'} events of {v.get('data')} "
        f"({v.get('split')} batches {v.get('batches')}; {v.get('source')})",
        f"training   {t.get('step')} steps, {t.get('events_seen')} events, {t.get('train_time_s')} s on {t.get('device')}",
        "calibration " + ("none (raw kappa)" if not cal else
                          f"{cal.get('form')} a={_fmt(cal.get('a'), g=True)} b={_fmt(cal.get('b'), g=True)}, held-out 90% coverage "
                          f"{_fmt((cal.get('coverage_before') or {}).get('0.9'), 3)} -> "
                          f"{_fmt((cal.get('coverage_after') or {}).get('0.9'), 3)}"),
        "versions   " + ", ".join(f"{k} {val}" for k, val in m.get("versions", {}).items()),
    ]
    if m.get("parity"):
        lines.append(f"parity     max |exported - torch| {m['parity']['max_abs_diff']:.1e} "
                     f"(tolerance {m['parity']['tolerance']:g})")
    return "\n".join(lines)


def _params(params: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k} = {val}" for k, val in params.items()) + "}" if params else ""
