"""The demo's comparison table and its verdict: what the three modes mean on this machine."""

from __future__ import annotations

import dataclasses
import math

from .demo import CAP, DemoResult, ModeResult

NOISE_FLOOR = 0.02  # run-time differences below 2% (plus the rounds' spread) are not claimed
TORCH_MIN_SMS = 68  # torch's own SM threshold for Triton GEMM templates on CUDA


def _err(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.2g}"


def format_comparison(result: DemoResult) -> str:
    """One row per mode: compile s, run ms, error vs fp64, check, what was autotuned."""
    header = ["mode", "compile s", "run ms", "max err vs fp64", "check", "GEMMs autotuned",
              "templates run", "template wins", "rejected", "capped"]
    rows = []
    for m in result.modes:
        tuned = m.settings is not None and m.compiled
        rows.append([
            m.mode, f"{m.compile_s:.1f}", f"{m.run_ms:.4f}" if m.compiled else "-",
            _err(m.max_abs), "ok" if m.passed else "WRONG" if m.compiled else "FAILED",
            str(m.autotuned) if tuned else "(torch)" if m.compiled else "-",
            str(m.templates_run) if tuned else "-",
            str(m.template_wins) if tuned else "-", str(len([r for d in m.decisions
                                                            for r in d.get("rejected") or {}]))
            if tuned else "-", str(m.count("capped")) if tuned else "-"])
    rows.append(["eager", "-", "-", _err(result.eager_max_abs), "", "", "", "", "", ""])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in [header, *rows])


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 and math.isfinite(a) else "-"


def _speed(mode: ModeResult, plain: ModeResult) -> str:
    """'faster'/'slower'/'the same' beyond the measured noise."""
    noise = NOISE_FLOOR + max(mode.spread, plain.spread)
    change = plain.run_ms / mode.run_ms - 1 if mode.run_ms > 0 else 0.0
    if abs(change) <= noise:
        return f"the same within noise (+-{noise:.0%})"
    return (f"{change:.0%} faster" if change > 0 else f"{-change:.0%} slower") + \
        f" (noise +-{noise:.0%})"


def verdict(result: DemoResult) -> list[str]:
    """Short lines: correctness, compile time, speed, and what it means on this machine."""
    plain = result.mode("plain")
    forced = [m for m in result.modes if m.settings is not None]
    cpu = result.workload.device == "cpu"
    lines = []
    failed = [m for m in result.modes if not m.compiled]
    if failed:
        lines.append("compile FAILED in " + "; ".join(f"{m.mode} ({m.error})" for m in failed)
                     + (": plain torch failed too, so this is torch's problem on this machine, "
                        "not the override's (docs/versions.md, 'Known torch problems')"
                        if not plain.compiled else ""))
        result = dataclasses.replace(result, modes=[m for m in result.modes if m.compiled])
        forced = [m for m in result.modes if m.settings is not None]
        if not plain.compiled or not forced:
            return lines
    wrong = [m for m in result.modes if not m.passed]
    if wrong:
        lines.append("correctness: WRONG in " + "; ".join(f"{m.mode} ({m.reason})"
                                                          for m in wrong))
    else:
        lines.append(f"correctness: every mode matches the float64 reference as eager does "
                     f"(max error {_err(max(m.max_abs or 0.0 for m in result.modes))}, eager "
                     f"{_err(result.eager_max_abs)})")
    rejected = sum(len(d.get("rejected") or {}) for m in forced for d in m.decisions)
    run = sum(m.templates_run for m in forced)
    lines.append(f"verification: {run} template run(s) checked against ATen, {rejected} "
                 "rejected" + ("" if run else " (no template was offered: nothing to check)"))
    if cpu:  # same kernels, same benchmarks: differences are the machine's noise
        lines.append("compile time: " + ", ".join(f"{m.mode} {m.compile_s:.1f} s"
                                                  for m in result.modes)
                     + " (the same choices are benchmarked in every mode on a CPU)")
    else:
        lines.append("compile time: " + ", ".join(
            f"{m.mode} {m.compile_s:.1f} s ({_ratio(m.compile_s, plain.compile_s)} plain)"
            for m in forced) + f"; plain {plain.compile_s:.1f} s")
    capped = next((m for m in forced if m.settings and m.settings.get("max_choices")), None)
    if capped is not None:
        cut = capped.count("capped")
        lines.append(f"cap (max_choices={CAP}): {cut} template choice(s) cut" + (
            "" if cut else ": nothing to cut here (each GEMM had fewer templates)"))
    if any(m.recompiled for m in result.modes):
        lines.append("note: dynamo compiled again while timing: the run times mean less")
    if cpu:
        lines.append("run time: " + ", ".join(f"{m.mode} {m.run_ms:.4f} ms"
                                               for m in result.modes)
                     + ". On a CPU, times of kernels this small on cores shared with other "
                     "work are noise, not a measurement (this holds for every time above)")
        lines.append("on this machine: a CPU has no SM gate, so plain max-autotune already "
                     "benchmarks Inductor's C++ template (with freezing) and the override "
                     "cannot make it faster; what it adds is the check of every template "
                     "output, the cap, the budget and the report. Its purpose is GPUs with "
                     f"fewer than {TORCH_MIN_SMS} SMs, where its benefit has not been "
                     "measured yet (benchmarks/results/README.md)")
        return lines
    lines.append("run time vs plain: " + ", ".join(f"{m.mode} {_speed(m, plain)}"
                                                   for m in forced))
    sms = result.sms or 0
    wins = sum(m.template_wins for m in forced)
    tuned = sum(m.autotuned for m in forced)
    gated = result.gate["torch_answer"] is False if result.gate else sms < TORCH_MIN_SMS
    if gated:
        best = max(forced, key=lambda m: plain.run_ms / m.run_ms if m.run_ms > 0 else 0)
        keep = "faster" in _speed(best, plain)
        lines.append(
            f"on this machine: torch gates this GPU ({sms} SMs < {TORCH_MIN_SMS}): plain "
            f"compiles use ATen/cuBLAS only; with the override Triton templates competed and "
            f"won {wins} of {tuned} GEMM decisions. "
            + ("The override paid off on this model: keep it (iso.compile(..., "
               "prefer=\"fastest\") keeps it only where it wins)." if keep else
               "It did not pay off on this model: templates are not automatically faster; "
               "use iso.compile(..., prefer=\"fastest\") to keep it only where it wins."))
    else:
        lines.append(
            f"on this machine: torch does not gate this GPU ({sms} SMs >= {TORCH_MIN_SMS}): "
            "plain max-autotune already offers Triton templates, so the override only adds "
            "verification, the cap and the report. To see what a mid-size GPU would pick: "
            "iso.override(simulate_sms=46)")
    return lines
