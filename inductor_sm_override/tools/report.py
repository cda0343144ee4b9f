"""Reading a JSONL decision log back: events, summary, table, plot (core/events.py writes it)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ..core.events import op_summary, split_timings

# --- reading ---------------------------------------------------------------------------


def read_events(path: str) -> tuple[list[dict[str, Any]], list[str]]:
    """All events of a JSONL report, and one error text per malformed line."""
    events: list[dict[str, Any]] = []
    errors: list[str] = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                errors.append(f"{path}:{number}: not UTF-8 text (byte "
                              f"0x{raw[exc.start]:02x} at column {exc.start + 1}); line skipped")
                continue
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError as exc:
                errors.append(f"{path}:{number}: not valid JSON ({exc.msg}); line skipped")
                continue
            if not isinstance(event, dict) or "event" not in event:
                errors.append(f"{path}:{number}: not an event object (no 'event' key); "
                              "line skipped")
                continue
            events.append(event)
    return events, errors


def summarize(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-op rows, totals, fallbacks, gate events and cache hits of a report.

    ``capped`` counts choices cut by ``max_choices``; ``budget_dropped`` those cut because
    the budget was spent (separate since 0.1: ``capped`` used to count both)."""
    ops = [op_summary(e) for e in events if e.get("event") == "autotune"]
    hits = [e for e in events if e.get("event") == "cache_hit"]
    bare = [e for e in _autotune(events) if no_template_offered(e)]
    refused = [e for e in events if e.get("event") == "cache_refused"]
    unchecked_ops = sum(1 for e in _autotune(events) if taken_unchecked(e))
    unverified_hits = sum(1 for e in hits if e.get("unverified"))
    return {
        "ops": ops,
        "totals": {
            "ops": len(ops),
            "seconds": round(sum(o["seconds"] or 0.0 for o in ops), 4),
            "template_wins": sum(1 for o, e in zip(ops, _autotune(events), strict=True)
                                 if o["winner"] and o["winner"] not in (e.get("externs") or ())),
            "choices_run": sum(o["run"] for o in ops),
            "capped": sum(o["capped"] for o in ops),
            "budget_dropped": sum(o["budget_dropped"] for o in ops),
            "rejected": sum(o["rejected"] for o in ops),
            "cache_hits": len(hits),
            "no_template": len(bare),
            "unverified": unchecked_ops + unverified_hits,
            "unverified_ops": unchecked_ops,
            "unverified_hits": unverified_hits,
            "refused_hits": len(refused),
        },
        "no_template_devices": sorted({str(e.get("device") or "?") for e in bare}),
        "cache_hits": hits,
        "cache_refused": refused,
        "notes": notes(events),
        "fleet": fleet_summary(events),
        "fallbacks": [e for e in events if e.get("event") == "fallback"],
        "gates": [e for e in events if e.get("event") == "gate"],
    }


def no_template_offered(event: dict[str, Any]) -> bool:
    """Inductor offered this op only extern (ATen) choices: nothing to autotune or verify."""
    offered = event.get("offered")
    return bool(offered) and set(offered) <= set(event.get("externs") or ())


def no_template_advice(count: int, total: int, devices: list[str],
                       gates: list[dict[str, Any]] = ()) -> str:
    """Why an op can have no template choice, for the devices it ran on."""
    why = []
    if any(d == "cpu" for d in devices):
        why.append("on CPU, Inductor offers its C++ GEMM template only for frozen weights: "
                   "set torch._inductor.config.freezing = True (or TORCHINDUCTOR_FREEZING=1) "
                   "and compile under torch.no_grad()")
    if any(d != "cpu" for d in devices):
        closed = [g for g in gates if g.get("answer") is False]
        if closed:
            g = closed[0]
            why.append(f"on {g.get('device')} the SM gate said no ({g.get('sms')} SMs, "
                       f"threshold {g.get('threshold')}): lower min_sms")
        why.append("on a GPU, `inductor-sm-override doctor` shows the gate's answer and "
                   "max_autotune_gemm_backends; the op's dtype or layout may be one the "
                   "templates do not take")
    ops = "op" if total == 1 else "ops"
    return (f"no template choice was offered for {count} of {total} {ops} (only ATen: nothing "
            f"was autotuned or verified there): " + "; ".join(why))
def taken_unchecked(event: dict[str, Any]) -> bool:
    """An autotune event whose winner was used without a passed check (older logs: the
    winner listed as unverified, or the sole-choice note)."""
    if "winner_unchecked" in event:
        return bool(event["winner_unchecked"])
    winner = event.get("winner")
    return bool(winner and winner in (event.get("unverified") or {})) or any(
        "without benchmarking (unverified)" in str(n) for n in event.get("notes") or ())


def notes(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every distinct note of the ops and why cache hits were unverified or refused, with
    how often each occurred (first seen first)."""
    counted: dict[str, int] = {}
    for event in events:
        kind = event.get("event")
        if kind == "autotune":
            texts = [f"{event.get('name')}: {n}" for n in event.get("notes") or ()]
        elif kind in ("cache_hit", "cache_refused"):
            what = "cache hit refused" if kind == "cache_refused" else "cache hit unverified"
            where = f"{str(event.get('key'))[:12]} ({event.get('source', '?')})"
            texts = [f"{what} {where}: {r}" for r in event.get("reasons") or ()]
        else:
            continue
        for text in texts:
            counted[text] = counted.get(text, 0) + 1
    return [{"text": text, "count": count} for text, count in counted.items()]


_WAIT_ENDS = {  # why a follower tuned an op itself (fleet/engines.py)
    "timeout": "the wait timed out",
    "stalled": "the leader had stalled",
    "store_error": "store error",
}


def _count(counts: dict[str, int], what: str) -> None:
    counts[what] = counts.get(what, 0) + 1


def fleet_summary(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per rank and fleet role: how many ops were decided elsewhere (by whom, from which
    engine), tuned here (and why, for a follower), or had their decision dropped here."""
    rows: dict[tuple[Any, ...], dict[str, Any]] = {}
    for event in events:
        if event.get("event") != "fleet":
            continue
        key = (event.get("group"), event.get("rank"), event.get("role"))
        row = rows.setdefault(key, {
            "group": event.get("group"), "leader": event.get("leader"),
            "rank": event.get("rank"), "role": event.get("role"), "ops": 0,
            "outcomes": {}, "sources": {}, "tuned_by": {}, "why_tuned": {}, "dropped": {},
            "waited_s": 0.0, "details": []})
        row["ops"] += 1
        outcome = str(event.get("outcome"))
        _count(row["outcomes"], outcome)
        row["waited_s"] = round(row["waited_s"] + float(event.get("waited_s") or 0.0), 3)
        detail = event.get("detail") or ""
        if outcome == "decided":
            _count(row["sources"], str(event.get("source")))
            by = event.get("tuned_by")
            _count(row["tuned_by"], f"rank {by}" if isinstance(by, int) else "another process")
        elif outcome == "dropped":
            _count(row["dropped"], "not offered here" if "not offered" in detail
                   else "failed its check here")
        elif event.get("wait_end") in _WAIT_ENDS:
            _count(row["why_tuned"], _WAIT_ENDS[str(event.get("wait_end"))])
        if event.get("role") == "none" and detail and detail not in row["details"]:
            row["details"].append(detail)
    return list(rows.values())


def _fleet_line(row: dict[str, Any]) -> str:
    def listed(counts: dict[str, int]) -> str:
        return "; ".join(f"{k}: {n}" for k, n in counts.items())

    ops = f"{row['ops']} op{'' if row['ops'] == 1 else 's'}"
    who = f"rank {row['rank']}" if row["rank"] is not None else "this process"
    counted = row["outcomes"]
    decided, tuned = counted.get("decided", 0), counted.get("tuned", 0)
    text = f"fleet ({row['group']}, leader {row['leader']}): {who} {row['role']}: {ops}: " \
        f"{decided} decided elsewhere"
    if decided:
        text += f" (by {listed(row['tuned_by'])}; from {listed(row['sources'])})"
    text += f", {tuned} tuned here" + (f" ({listed(row['why_tuned'])})" if row["why_tuned"]
                                         else "")
    dropped = sum(row["dropped"].values())
    if dropped:
        text += f", {dropped} decision{'' if dropped == 1 else 's'} dropped and tuned " \
            f"here ({listed(row['dropped'])})"
    if row["waited_s"]:
        text += f"; waited {row['waited_s']:.1f} s in all"
    if row["details"]:
        text += f" (alone: {'; '.join(row['details'])})"
    return text


def _producers(hits: list[dict[str, Any]]) -> str:
    seen: list[str] = []
    for hit in hits:
        made = hit.get("producer") or {}
        if not made:
            continue
        rank = made.get("rank")
        who = f"{made.get('host')}" + (f" rank {rank}" if rank is not None else "")
        if who not in seen:
            seen.append(who)
    return ", ".join(seen[:4]) + (", ..." if len(seen) > 4 else "")


def _cpu_only(summary: dict[str, Any]) -> bool:
    return bool(summary["ops"]) and all(o.get("device") == "cpu" for o in summary["ops"])


def _autotune(events: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    return (e for e in events if e.get("event") == "autotune")


def format_table(summary: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return f"{value:.4f}" if value is not None else "-"

    header = ["op", "shape", "winner", "template ms", "extern ms", "speed-up", "run",
              "capped", "budget", "rejected", "seconds"]
    rows = [[o["name"], o["shapes"], o["winner"] or "-", ms(o["template_ms"]),
             ms(o["extern_ms"]), f"{o['speedup']:.2f}x" if o["speedup"] else "-",
             str(o["run"]), str(o["capped"]), str(o["budget_dropped"]), str(o["rejected"]),
             f"{o['seconds']:.2f}" if o["seconds"] is not None else "-"]
            for o in summary["ops"]]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))
             for r in [header, *rows]]
    t = summary["totals"]
    lines.append(f"total: {t['ops']} op{'' if t['ops'] == 1 else 's'}, "
                 f"{t['seconds']:.2f} s autotuning, "
                 f"{t['template_wins']} won by templates, {t['choices_run']} choices run, "
                 f"{t['capped']} capped, {t['budget_dropped']} dropped by the budget, "
                 f"{t['rejected']} rejected")
    if t["cache_hits"]:
        hits = summary["cache_hits"]
        remote = sum(1 for h in hits if h.get("source") == "remote")
        producers = _producers(hits)
        graphs = "graph" if t["cache_hits"] == 1 else "graphs"
        lines.append(f"{t['cache_hits']} {graphs} loaded from cache (autotuned earlier under "
                     f"the same settings): {len(hits) - remote} local, {remote} remote"
                     + (f"; made by {producers}" if producers else ""))
    lines += [_fleet_line(row) for row in summary.get("fleet") or ()]
    if t.get("no_template"):
        lines.append(no_template_advice(t["no_template"], t["ops"],
                                        summary.get("no_template_devices") or [],
                                        summary.get("gates") or []))
    if t["unverified"] or t["refused_hits"]:
        parts = []
        if t["unverified_ops"]:
            s_ = "s" if t["unverified_ops"] != 1 else ""
            parts.append(f"{t['unverified_ops']} op{s_} taken without a check")
        if t["unverified_hits"]:
            parts.append(f"{t['unverified_hits']} cache hit(s) unverified")
        if t["refused_hits"]:
            parts.append(f"{t['refused_hits']} cache hit(s) refused (require_manifest)")
        lines.append("unverified: " + ", ".join(parts))
    else:
        lines.append("unverified: 0")
    if summary["notes"]:
        lines.append("notes:")
        lines += [f"  {n['text']}" + (f" (x{n['count']})" if n["count"] > 1 else "")
                  for n in summary["notes"]]
    if any(o["speedup"] for o in summary["ops"]) and _cpu_only(summary):
        lines.append("note: CPU timings of tiny kernels are mostly noise (microseconds, "
                     "shared cores): the speed-ups above say little about real workloads")
    for fallback in summary["fallbacks"]:
        lines.append(f"fallback: iso.compile used {fallback.get('used')!r} "
                     f"({fallback.get('reason', '')})")
    return "\n".join(lines)


def plot(events: list[dict[str, Any]], out: str) -> None:
    """Timings per op (every choice run, template vs extern), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    autotune = list(_autotune(events))
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(autotune) + 3), 4))
    for index, event in enumerate(autotune):
        templates, externs = split_timings(event)
        ax.scatter([index] * len(templates), list(templates.values()), marker="o",
                   color="tab:blue", label="template" if index == 0 else None, alpha=0.6)
        ax.scatter([index] * len(externs), list(externs.values()), marker="s",
                   color="tab:orange", label="extern (ATen)" if index == 0 else None)
    ax.set_xticks(range(len(autotune)))
    ax.set_xticklabels([f"{i}:{e.get('name')}" for i, e in enumerate(autotune)],
                       rotation=45, ha="right")
    ax.set_ylabel("ms (lower is better)")
    ax.set_yscale("log")
    ax.set_title("autotune timings per op")
    if autotune:
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)
