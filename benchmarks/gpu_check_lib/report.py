"""The GPU goals judged from a run's figures, the Markdown summary, the plot and the
console's goal lines."""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

from .cases import MODES

DRY_RUN_VERDICT = ("DRY RUN: CPU figures at tiny sizes, every GPU test skipped: no GPU goal "
                   "is judged (the summary's statuses only show the judging code works)")


def goals(results: dict[str, Any]) -> list[dict[str, str]]:
    """The issue's GPU goals from the rows: PASS / MISS / NOT MEASURED, with the figures."""
    rows = [r for r in results.get("rows", []) if "ms" in r]
    by_mode = {m: {r["key"]: r for r in rows if r["mode"] == m} for m in MODES}
    cases_total = len({r["key"] for r in results.get("rows", [])}) or None
    out = []

    verified = [r for r in by_mode["forced+verify"].values() if "speedup_vs_gated" in r]
    slower = [f"{r['case']} x{r['speedup_vs_gated']:.3f} (noise {r['noise']:.0%})"
              for r in verified if r["speedup_vs_gated"] < 1 - r["noise"]]
    if not verified:
        status, detail = "NOT MEASURED", "no forced+verify row with a gated baseline"
    else:
        status = "MISS" if slower else "PASS"
        worst = min(verified, key=lambda r: r["speedup_vs_gated"])
        detail = (f"{len(verified)} of {cases_total} cases measured; worst {worst['case']} "
                  f"x{worst['speedup_vs_gated']:.3f}"
                  + (f"; slower beyond noise: {', '.join(slower)}" if slower else ""))
    capped = [r for r in by_mode["cap8+verify"].values() if "speedup_vs_gated" in r]
    if capped:
        worst = min(capped, key=lambda r: r["speedup_vs_gated"])
        beyond = sum(1 for r in capped if r["speedup_vs_gated"] < 1 - r["noise"])
        detail += (f" (cap8+verify, not judged: worst {worst['case']} "
                   f"x{worst['speedup_vs_gated']:.3f}, {beyond} slower beyond noise)")
    out.append({"goal": "forced + verified never slower than gated beyond noise",
                "status": status, "detail": detail})

    fastest = [r["speedup_vs_gated"] for r in by_mode["fastest"].values()
               if "speedup_vs_gated" in r and r["kind"] != "gemm"]
    if not fastest:
        status, detail = "NOT MEASURED", "no model-level fastest row"
    else:
        median = statistics.median(fastest)
        status = "PASS" if median >= 1.05 else "MISS"
        detail = (f"median x{median:.3f} over {len(fastest)} model cases "
                  f"({', '.join(f'x{v:.3f}' for v in fastest)})")
    out.append({"goal": 'median speed-up >= 1.05x with prefer="fastest" at model level',
                "status": status, "detail": detail})

    pairs = [(by_mode["forced+verify"][k], r) for k, r in by_mode["cap8+verify"].items()
             if k in by_mode["forced+verify"]]
    timed = [(u, c) for u, c in pairs if u.get("autotune_s") and c.get("autotune_s") is not None]
    if not timed:
        status, detail = "NOT MEASURED", "no case with both uncapped and cap8 autotune times"
    else:
        speeds = [u["ms"] / c["ms"] for u, c in timed]
        ratio = sum(c["autotune_s"] for _, c in timed) / sum(u["autotune_s"] for u, _ in timed)
        status = "PASS" if min(speeds) >= 0.97 and ratio <= 0.35 else "MISS"
        detail = (f"step 2 (DEFAULT space, {len(timed)} cases): worst speed kept "
                  f"{min(speeds):.3f}x, autotune time {ratio:.2f}x of uncapped")
    exhaustive = {r["mode"]: r for r in results.get("autotune_cost", []) if "ms" in r}
    if "exhaustive+budget" in exhaustive and "exhaustive cap8+verify" in exhaustive:
        u, c = exhaustive["exhaustive+budget"], exhaustive["exhaustive cap8+verify"]
        detail += (f"; step 3 EXHAUSTIVE (budget-capped, reached {u.get('reached')}): cap8 "
                   f"speed {u['ms'] / c['ms']:.3f}x at {c['autotune_s']:.1f} s vs "
                   f"{u['autotune_s']:.1f} s")
    out.append({"goal": "max_choices=8 keeps >= 0.97x of uncapped speed at <= 0.35x its "
                        "autotune time", "status": status, "detail": detail})

    on = exhaustive.get("exhaustive cap8+verify")
    off = exhaustive.get("exhaustive cap8 no-verify")
    if not on or not off or not off.get("autotune_s"):
        status, detail = "NOT MEASURED", "step 3's verify on/off pair did not run"
    else:
        overhead = on["autotune_s"] / off["autotune_s"] - 1
        status = "PASS" if overhead <= 0.10 else "MISS"
        detail = (f"{overhead:+.1%} ({on['autotune_s']:.2f} s on vs {off['autotune_s']:.2f} s "
                  "off, one cold compile each: noisy)")
    out.append({"goal": "verify overhead <= 10% of autotune time", "status": status,
                "detail": detail})
    return out


def summary_markdown(results: dict[str, Any], tag: str) -> str:
    info = results["machine"]
    emu = results.get("emulation") or {}
    lines = [f"# gpu-check {tag}", "",
             f"{info['device']}, torch {info['torch']}, triton {info['triton']}, "
             f"python {info['python']}, {info['date']}."
             + (" **DRY RUN on the CPU: tiny sizes, the figures say nothing about GPUs.**"
                if results["dry_run"] else ""),
             f"Emulation: {emu.get('note', 'not reached')}. Elapsed "
             f"{results.get('elapsed_s', 0):.0f} s of a {results['limit_s']:.0f} s limit.", "",
             "## GPU goals", "", "| goal | status | figures |", "|---|---|---|"]
    lines += [f"| {g['goal']} | {g['status']} | {g['detail']} |" for g in results["goals"]]
    lines += ["", "## Steps", "", "| step | status | seconds (estimate) |", "|---|---|---|"]
    for key, step in results["steps"].items():
        lines.append(f"| {key} | {step['status']} | {step.get('seconds', '-')} "
                     f"({step['estimate_s']:.0f}) |")
    pytest = results.get("pytest")
    if pytest:
        lines += ["", f"pytest -m gpu: exit {pytest['exit_code']}, {pytest.get('tests', 0)} "
                  f"tests, {pytest.get('failures', 0)} failed, {pytest.get('errors', 0)} "
                  f"errors, {pytest.get('skipped', 0)} skipped"
                  + (" (timed out)" if pytest.get("timed_out") else "") + "."]
        lines += [f"- FAILED {name}" for name in pytest.get("failed", [])]
    if results["rows"]:
        lines += ["", "## 46-SM emulation", "",
                  "| case | mode | ms | vs gated | compile s | autotune s | err vs fp64 | "
                  "template wins | winner |", "|---|---|---|---|---|---|---|---|---|"]
        for r in results["rows"]:
            if "ms" not in r:
                lines.append(f"| {r['case']} | {r['mode']} | error: {r.get('error', '')[:80]} "
                             "| | | | | | |")
                continue
            winner = r["winner"] if len(r["winner"]) <= 60 else r["winner"][:57] + "..."
            used = f" (used {r['used']})" if r["mode"] == "fastest" else ""
            lines.append(f"| {r['case']} | {r['mode']}{used} | {r['ms']:.4f} | "
                         f"x{r.get('speedup_vs_gated', float('nan')):.3f} | {r['compile_s']:.1f}"
                         f" | {r['autotune_s']:.1f} | {r['rel_err_fp64']:.1e} | "
                         f"{r['template_wins']}/{r['ops']} | {winner} |")
    if results["autotune_cost"]:
        lines += ["", "## Autotune cost (one GEMM)", "",
                  "| mode | ms | autotune s | compile s | reached | winner |",
                  "|---|---|---|---|---|---|"]
        for r in results["autotune_cost"]:
            lines.append(f"| {r['mode']} | " + (
                f"{r['ms']:.4f} | {r['autotune_s']:.1f} | {r['compile_s']:.1f} | "
                f"{r.get('reached', '')} | {r['winner']} |" if "ms" in r
                else f"error: {r.get('error', '')[:80]} | | | | |"))
    if results["training"]:
        lines += ["", "## Training step (MLP block)", "",
                  "| mode | ms/step | vs gated | compile s | forward ops | backward ops | "
                  "grad err vs fp64 |", "|---|---|---|---|---|---|---|"]
        for r in results["training"]:
            lines.append(f"| {r['mode']} | " + (
                f"{r['ms']:.4f} | x{r.get('speedup_vs_gated', float('nan')):.3f} | "
                f"{r['compile_s']:.1f} | {r['forward_ops']} | {r['backward_ops']} | "
                f"{r['grad_rel_err_fp64']:.1e} |" if "ms" in r
                else f"error: {r.get('error', '')[:80]} | | | | | |"))
        forced = next((r for r in results["training"]
                       if r["mode"] != "gated" and "backward_ops" in r), None)
        if forced is not None:
            lines += ["", "Backward GEMM decisions under the override: " + (
                f"present ({forced['backward_ops']} backward ops; templates won "
                f"{forced['template_wins']} of all {forced['ops']} ops)."
                if forced["backward_decisions_present"] else
                "ABSENT: the backward GEMMs were not autotuned under the override's settings.")]
    if results["skipped"]:
        lines += ["", "## Skipped (time limit)", ""] + [f"- {s}" for s in results["skipped"]]
    lines += ["", "## Notes", "",
              "- Every mode compiles in a fresh Inductor/Triton cache, except `fastest`: it runs "
              "after gated and cap8+verify in their cache and gets their graphs from the FX "
              "graph cache (same settings), so its compile column is not a cold compile."
              + (" (Dry run: caches are shared, C++ kernels are built once.)"
                 if results["dry_run"] else ""),
              ("- ms: median wall time (CPU dry run), measured twice;" if results["dry_run"] else
               "- ms: median GPU time (triton do_bench: CUDA events, L2 flushed), measured twice;")
              + " noise = the larger of 2% and the two modes' spreads (between their two "
              "measurements) added.",
              f"- The parts that finished took {results.get('measured_vs_estimated', 1):.2f}x "
              "their estimates (later parts were re-scaled by this before being started)."]
    recompiled = [f"{r.get('case', '')} {r['mode']}" for key in ("rows", "autotune_cost",
                                                                 "training")
                  for r in results[key] if r.get("recompiled_while_timed")]
    if recompiled:
        lines.append("- WARNING: recompiled while being timed (outside the block), so the "
                     "timed kernels may not be the block's: " + ", ".join(recompiled))
    return "\n".join(lines) + "\n"


def plot_speedups(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keyed = [r for r in rows if "speedup_vs_gated" in r and r["mode"] != "gated"]
    cases = list(dict.fromkeys(r["case"] for r in keyed))
    shown = MODES[1:]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(cases) + 2), 4.5))
    width = 0.8 / len(shown)
    for offset, mode in enumerate(shown):
        values = [next((r["speedup_vs_gated"] for r in keyed
                        if r["mode"] == mode and r["case"] == c), 0.0) for c in cases]
        ax.bar([i + offset * width for i in range(len(cases))], values, width, label=mode)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(1.05, color="grey", linewidth=0.8, linestyle="--", label="1.05x goal")
    ax.set_xticks([i + width * (len(shown) - 1) / 2 for i in range(len(cases))])
    ax.set_xticklabels(cases, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("speed-up vs gated (46-SM emulation)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    os.replace(tmp, path)




def goal_lines(results: dict[str, Any]) -> list[str]:
    """What the console says about the goals: the verdicts of a GPU run; for a dry run, that
    nothing was judged (its figures come from the CPU)."""
    if results.get("dry_run"):
        return [DRY_RUN_VERDICT] + [f"goal not judged (dry run) {g['goal']}: CPU figures "
                                    f"{g['detail']}" for g in results.get("goals", [])]
    return [f"goal {g['status']:12s} {g['goal']}: {g['detail']}"
            for g in results.get("goals", [])]
