"""Reading a JSONL decision log back: events, summary, table, plot (core/events.py writes it)."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from typing import Any

from ..core.events import op_summary, split_timings

# --- reading ---------------------------------------------------------------------------

MAX_DEPTH = 32  # report events nest a few levels; deeper is not one of ours
_NAME = (str, int, float, bool)
# field -> the JSON types the summary reads it as, in any event that has it (null: unset)
_FIELDS: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("name", "winner", "device", "source", "group", "rank", "role", "leader",
                     "outcome", "wait_end", "used"), _NAME),
    **dict.fromkeys(("timings", "rejected_by", "producer"), (dict,)),
    "rejected": (dict, list),  # "unverified": a dict in "autotune", a bool in "cache_hit"
    **dict.fromkeys(("capped", "budget_dropped", "notes", "reasons", "shapes", "externs",
                     "offered"), (list,)),
    "waited_s": (int, float), "detail": (str,),
}


def _too_deep(value: Any, levels: int = MAX_DEPTH) -> bool:
    inner = value.values() if isinstance(value, dict) else value if isinstance(value, list) \
        else ()
    return any(levels == 0 or _too_deep(v, levels - 1) for v in inner)


def event_problem(event: Any) -> str | None:
    """Why a parsed line is not a report event the summary can read, or None."""
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return "not an event object (no 'event' name)"
    for field, kinds in _FIELDS.items():
        value = event.get(field)
        if value is not None and not isinstance(value, kinds):
            return (f"field {field!r} is {type(value).__name__}, expected "
                    + " or ".join(k.__name__ for k in kinds))
    names = [v for f in ("externs", "offered") for v in event.get(f) or ()]
    if not all(v is None or isinstance(v, _NAME) for v in names):
        return "'externs' or 'offered' holds something other than names"
    if abs(event.get("waited_s") or 0) > 1e300 or _too_deep(event):
        return "a number or a nesting this report never has"
    return None


def read_events(path: str) -> tuple[list[dict[str, Any]], list[str]]:
    """All readable events of a JSONL report, and one error text per line skipped."""
    events: list[dict[str, Any]] = []
    errors: list[str] = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                event = json.loads(raw.decode("utf-8")) if raw.strip() else None
            except UnicodeDecodeError as exc:
                problem = f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
            except (ValueError, RecursionError) as exc:  # also a 5000-digit number, [[[[...
                problem = f"not valid JSON ({getattr(exc, 'msg', type(exc).__name__)})"
            else:
                if event is None:  # a blank line
                    continue
                problem = event_problem(event)
            if problem:
                errors.append(f"{path}:{number}: {problem}")
            else:
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
    winner, unverified = event.get("winner"), event.get("unverified")
    return bool(winner and isinstance(unverified, (dict, list)) and winner in unverified) or any(
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


MAX_REJECTED_SHOWN = 3  # per op in the table; --json lists all


def short_reason(reason: str) -> str:
    """The first line of a rejection reason without its tolerances, at most 80 chars."""
    text = re.sub(r" \((atol|rtol) [^()]*\)$", "", reason.strip().split("\n")[0])
    return text if len(text) <= 80 else text[:77] + "..."


def rejected_lines(op: dict[str, Any]) -> list[str]:
    """One indented line per rejected choice of an op summary: who rejected it, and why."""
    lines = [f"  rejected {name} ({op['rejected_by'].get(name, '?')}): "
             f"{short_reason(reason) or 'no reason recorded'}"
             for name, reason in list(op["reasons"].items())[:MAX_REJECTED_SHOWN]]
    if len(op["reasons"]) > MAX_REJECTED_SHOWN:
        lines.append(f"  ... and {len(op['reasons']) - MAX_REJECTED_SHOWN} more rejected "
                     "(--json lists all)")
    return lines


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
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
    for row, op in zip(rows, summary["ops"], strict=True):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
        lines += rejected_lines(op)
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
    ops = f"op{'' if t['unverified_ops'] == 1 else 's'} taken without a check"
    parts = [f"{t[key]} {what}" for key, what in (
        ("unverified_ops", ops), ("unverified_hits", "cache hit(s) unverified"),
        ("refused_hits", "cache hit(s) refused (require_manifest)")) if t[key]]
    lines.append("unverified: " + (", ".join(parts) or "0"))
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


MAX_PLOT_OPS = 40  # groups drawn; the note says how many more the log has
REJECTED = "rejected (reason below)"


def _plain(text: str) -> str:
    """Text matplotlib draws as it is (a ``$`` would start mathtext)."""
    return text.replace("$", r"\$")


def figure(events: list[dict[str, Any]]) -> Any:
    """The timings plot as a matplotlib Figure: one group per op (name, shape, capped and
    budget-dropped counts), every choice run (template / extern), the winner starred,
    rejected choices crossed at the bottom with their reasons in a note."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    autotune = list(_autotune(events))
    shown = autotune[:MAX_PLOT_OPS]
    style = {"template": ("o", "tab:blue", 36), "extern (ATen)": ("s", "tab:orange", 36),
             "winner": ("*", "none", 400), REJECTED: ("x", "tab:red", 60)}
    kinds: dict[str, list[tuple[int, float]]] = {label: [] for label in style}
    labels, notes = [], []
    for x, event in enumerate(shown):
        op = op_summary(event)
        templates, externs = split_timings(event)
        kinds["template"] += [(x, v) for v in templates.values() if v > 0]
        kinds["extern (ATen)"] += [(x, v) for v in externs.values() if v > 0]
        kinds["winner"] += [(x, v) for k, v in {**templates, **externs}.items()
                            if k == op["winner"] and v > 0]
        kinds[REJECTED] += [(x, 0.0)] * op["rejected"]
        notes += [f"op {x}:{line}" for line in rejected_lines(op)]
        counts = ", ".join([f"{op['capped']} capped"] * bool(op["capped"]) + [
            f"{op['budget_dropped']} budget-dropped"] * bool(op["budget_dropped"]))
        labels.append(_plain("\n".join(filter(None, [op["name"], op["shapes"], counts]))))
    notes += [f"{len(autotune) - len(shown)} more ops not drawn"] * (len(autotune) > len(shown))
    times = [v for points in kinds.values() for _, v in points if v > 0]
    low, high = (min(times) / 3, max(times) * 2) if times else (0.1, 10.0)
    kinds[REJECTED] = [(x, low * 1.5) for x, _ in kinds[REJECTED]]
    height = 4.5 + 0.17 * len(notes)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(shown) + 4), height))
    for label, points in kinds.items():
        if points:
            marker, color, size = style[label]
            edge = {"edgecolors": "black", "zorder": 3} if color == "none" else {}
            ax.scatter([p[0] for p in points], [p[1] for p in points], marker=marker, s=size,
                       facecolors=color, label=label, **edge)
    ax.set_xticks(range(len(shown)), labels, fontsize=8)
    ax.set_xlim(-0.5, max(len(shown), 1) - 0.5)
    ax.set_yscale("log")
    ax.set_ylim(low, high)  # a factor >= 4: at least one 1-2-5 tick, labelled in plain ms
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("ms per call (lower is better)")
    ax.set_title("autotune timings per op (star: the winner)")
    if times or kinds[REJECTED]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if notes:
        fig.text(0.01, 0.01, _plain("\n".join(notes)), fontsize=7, va="bottom")
    fig.tight_layout(rect=(0, (0.17 * len(notes) + 0.1) / height if notes else 0, 1, 1))
    return fig


def plot(events: list[dict[str, Any]], out: str) -> None:
    """The timings plot (:func:`figure`) as a PNG."""
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a glyph missing from the font: drawn as a box
        fig = figure(events)
        try:
            fig.savefig(out, format="png")
        finally:
            plt.close(fig)
