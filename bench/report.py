"""Ratios against the ceilings, the goals, the printed table, the result JSON and the latency plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA = "vitrine-bench/1"
TOP_KEYS = ("schema", "started_at", "command", "machine", "settings", "model", "ceilings", "servers", "ratios", "goals")
PHASE_KEYS = ("profile", "server", "load", "cpu", "disturbed", "attempts")
PROFILE_ORDER = ("A", "B", "B-raw", "C50", "C90")

# Goals of issue 5; value against target, `higher` says which way is better.
GOALS: dict[str, dict[str, Any]] = {
    "A_vs_in_process": {"target": 0.85, "higher": True, "text": "profile A / in-process ceiling"},
    "B_vs_in_process": {"target": 0.60, "higher": True, "text": "profile B / in-process ceiling"},
    "A_vs_bentoml": {"target": 1.5, "higher": True, "text": "profile A / BentoML A (at p99 <= BentoML's)"},
    "B_vs_bentoml": {"target": 1.5, "higher": True, "text": "profile B / BentoML B (at p99 <= BentoML's)"},
    "cold_start_s": {"target": 2.0, "higher": False, "text": "cold start, process start to ready (median)"},
    "rss_peak_mb": {"target": 300.0, "higher": False, "text": "resident memory under load (peak)"},
}


def in_process_ceiling(ceilings: dict[str, Any]) -> float | None:
    """The in-process ceiling: the better of the sequential and pipelined decode+run loops."""
    rates = [c["images_per_s"] for k, c in ceilings.items() if k.startswith("in_process") and c]
    return max(rates) if rates else None


def phase(results: dict[str, Any], server: str, profile: str) -> dict[str, Any] | None:
    """One phase record, or None when it was not run."""
    found: dict[str, Any] | None = results.get("servers", {}).get(server, {}).get("phases", {}).get(profile)
    return found


def rate(record: dict[str, Any] | None) -> float | None:
    """Images per second of a phase record."""
    return None if record is None else float(record["load"]["images_per_s"])


def p99(record: dict[str, Any] | None) -> float | None:
    """p99 latency in ms of a phase record."""
    return None if record is None else float(record["load"]["latency_ms"]["p99"])


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def compute_ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Every phase against both ceilings, and Vitrine against each peer on the same profile."""
    ceilings = results.get("ceilings", {})
    in_proc = in_process_ceiling(ceilings)
    ort_alone = (ceilings.get("onnxruntime") or {}).get("images_per_s")
    ratios: dict[str, Any] = {
        "in_process_ceiling": in_proc,
        "onnxruntime_ceiling": ort_alone,
        "vs_in_process": {},
        "vs_onnxruntime": {},
        "vs_peer": {},
    }
    for server, block in results.get("servers", {}).items():
        for profile, record in block.get("phases", {}).items():
            key = f"{server}/{profile}"
            ratios["vs_in_process"][key] = _div(rate(record), in_proc)
            ratios["vs_onnxruntime"][key] = _div(rate(record), ort_alone)
    for peer in results.get("servers", {}):
        if peer.startswith("vitrine"):  # the service and its setting variants are not peers
            continue
        for profile in ("A", "B"):
            ours, theirs = phase(results, "vitrine", profile), phase(results, peer, profile)
            if ours is None or theirs is None:
                continue
            ratios["vs_peer"][f"{peer}/{profile}"] = {
                "throughput_ratio": _div(rate(ours), rate(theirs)),
                "p99_ms": p99(ours),
                "peer_p99_ms": p99(theirs),
                "p99_not_worse": (p99(ours) or 0) <= (p99(theirs) or 0),
            }
    return ratios


def evaluate_goals(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal with its measured value and whether it is met (None when not measured)."""
    ratios = results.get("ratios") or compute_ratios(results)
    vitrine = results.get("servers", {}).get("vitrine", {})
    values: dict[str, tuple[float | None, bool]] = {
        "A_vs_in_process": (ratios["vs_in_process"].get("vitrine/A"), True),
        "B_vs_in_process": (ratios["vs_in_process"].get("vitrine/B"), True),
        "cold_start_s": (vitrine.get("cold_start_median_s"), True),
        "rss_peak_mb": (vitrine.get("rss_peak_mb"), True),
    }
    for profile in ("A", "B"):
        versus = ratios["vs_peer"].get(f"bentoml/{profile}")
        values[f"{profile}_vs_bentoml"] = (
            (versus["throughput_ratio"], bool(versus["p99_not_worse"])) if versus else (None, True)
        )
    goals = []
    for name, goal in GOALS.items():
        value, extra_ok = values[name]
        met = (
            None
            if value is None
            else extra_ok and (value >= goal["target"] if goal["higher"] else value <= goal["target"])
        )
        goals.append({"name": name, "text": goal["text"], "value": value, "target": goal["target"], "met": met})
    return goals


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ceiling_notes(ceiling: dict[str, Any]) -> str:
    """DISTURBED, and the two loops a bracketed ceiling is the mean of."""
    notes = ["DISTURBED"] if ceiling.get("disturbed") else []
    if ceiling.get("after_images_per_s") is not None:
        before, after = ceiling["before_images_per_s"], ceiling["after_images_per_s"]
        notes.append(f"mean of {before:.0f} before and {after:.0f} after")
    return "; ".join(notes)


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    """Rows of the printed table: the two ceilings, then every server's phases in profile order."""
    ratios = results.get("ratios") or compute_ratios(results)
    in_proc = ratios["in_process_ceiling"]
    ort_alone = ratios["onnxruntime_ceiling"]
    rows = []
    for key, label in (
        ("onnxruntime", "onnxruntime alone"),
        ("onnxruntime_on_device", "onnxruntime alone, input on the GPU"),
        ("in_process", "in-process, sequential"),
        ("in_process_pipelined", "in-process, pipelined"),
        ("in_process_pipelined_nospin", "in-process, pipelined, no spinning"),
        ("in_process_workers", "in-process, 1-thread workers"),
    ):
        c = results.get("ceilings", {}).get(key)
        if c:
            rows.append(
                [
                    "ceiling",
                    f"{label}, batch {c['batch']}" if c.get("batch") else label,
                    "-",
                    "-",
                    _fmt(c["images_per_s"]),
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    _fmt(_div(c["images_per_s"], in_proc), 2),
                    _fmt(_div(c["images_per_s"], ort_alone), 2),
                    _fmt(c.get("cpu", {}).get("others_cores"), 2),
                    _ceiling_notes(c),
                ]
            )
    for server, block in results.get("servers", {}).items():
        phases = block.get("phases", {})
        for profile in sorted(phases, key=lambda p: PROFILE_ORDER.index(p) if p in PROFILE_ORDER else 99):
            r = phases[profile]
            load = r["load"]
            lat = load["latency_ms"]
            notes = []
            if r.get("disturbed"):
                notes.append("DISTURBED")
            if load.get("target_rate_rps"):
                notes.append(f"target {load['target_rate_rps']:.0f} req/s, late {load.get('late', 0)}")
            if r.get("batch_mean"):
                notes.append(f"mean batch {r['batch_mean']:.1f}")
            rows.append(
                [
                    server,
                    profile,
                    str(load["connections"]),
                    str(load["images_per_request"]),
                    _fmt(load["images_per_s"]),
                    _fmt(load["requests_per_s"]),
                    _fmt(lat["p50"], 1),
                    _fmt(lat["p95"], 1),
                    _fmt(lat["p99"], 1),
                    str(load["requests"] - load["ok"]),
                    _fmt(ratios["vs_in_process"].get(f"{server}/{profile}"), 2),
                    _fmt(ratios["vs_onnxruntime"].get(f"{server}/{profile}"), 2),
                    _fmt(r["cpu"].get("others_cores"), 2),
                    "; ".join(notes),
                ]
            )
    return rows


HEADER = [
    "server",
    "profile",
    "conns",
    "img/req",
    "img/s",
    "req/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "non-2xx",
    "x in-proc",
    "x ORT",
    "other CPU",
    "notes",
]


def format_table(results: dict[str, Any]) -> str:
    """The result as a Markdown table, then peers, goals, cold start and memory lines."""
    rows = [HEADER, *table_rows(results)]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("---" for _ in HEADER) + "|")
    ratios = results.get("ratios") or compute_ratios(results)
    out = ["\n".join(lines), ""]
    for key, v in ratios["vs_peer"].items():
        out.append(
            f"vitrine vs {key}: {_fmt(v['throughput_ratio'], 2)}x throughput, p99 {_fmt(v['p99_ms'], 1)} ms"
            f" vs {_fmt(v['peer_p99_ms'], 1)} ms"
        )
    for name, block in results.get("servers", {}).items():
        starts = block.get("cold_start_s") or []
        out.append(
            f"{name}: cold start {', '.join(f'{s:.2f}' for s in starts) or '-'} s; peak RSS under load "
            f"{_fmt(block.get('rss_peak_mb'))} MB (PSS {_fmt(block.get('pss_peak_mb'))} MB: shared pages counted once)"
        )
    out.append("")
    for goal in results.get("goals") or evaluate_goals(results):
        mark = {True: "MET", False: "NOT MET", None: "not measured"}[goal["met"]]
        out.append(f"goal {goal['text']}: {_fmt(goal['value'], 2)} (target {goal['target']}) {mark}")
    return "\n".join(out)


def missing_keys(results: dict[str, Any]) -> list[str]:
    """Keys the result JSON must have but lacks (empty when the shape is right)."""
    missing = [k for k in TOP_KEYS if k not in results]
    for server, block in results.get("servers", {}).items():
        for profile, record in block.get("phases", {}).items():
            missing += [f"servers.{server}.phases.{profile}.{k}" for k in PHASE_KEYS if k not in record]
    return missing


def write_json(results: dict[str, Any], path: Path) -> None:
    """Write the results, pretty-printed."""
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")


COLOURS = {"vitrine": "tab:blue", "naive": "tab:orange", "bentoml": "tab:green", "mlserver": "tab:red"}
VARIANT_COLOURS = ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def plot(results: dict[str, Any], path: Path) -> None:
    """Throughput against latency: p99 (filled) and p50 (open) per phase, ceilings as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(10.5, 5.5), dpi=110)
    spare = iter(VARIANT_COLOURS * 4)
    for server, block in results.get("servers", {}).items():
        colour = COLOURS.get(server) or next(spare)
        phases = block.get("phases", {})
        curve = [phases[p] for p in ("C50", "C90", "B") if p in phases]
        if len(curve) > 1:  # the same request shape at rising load
            ax.plot([rate(r) or 0.0 for r in curve], [p99(r) or 0.0 for r in curve], color=colour, alpha=0.4, lw=1)
        for profile, r in phases.items():
            x, lat = rate(r) or 0.0, r["load"]["latency_ms"]
            ax.plot([x, x], [lat["p50"], lat["p99"]], color=colour, alpha=0.4, lw=1)
            ax.scatter(
                [x],
                [lat["p99"]],
                color=colour,
                s=36,
                zorder=3,
                label=f"{server} p99" if profile == next(iter(phases)) else None,
            )
            ax.scatter(
                [x],
                [lat["p50"]],
                facecolors="none",
                edgecolors=colour,
                s=36,
                zorder=3,
                label=f"{server} p50" if profile == next(iter(phases)) else None,
            )
            mark = " (disturbed)" if r.get("disturbed") else ""
            ax.annotate(profile + mark, (x, lat["p99"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ratios = results.get("ratios", {})
    ort_disturbed = bool((results.get("ceilings", {}).get("onnxruntime") or {}).get("disturbed"))
    for value, label, style in (
        (ratios.get("in_process_ceiling"), "in-process ceiling", "--"),
        (ratios.get("onnxruntime_ceiling"), "onnxruntime alone" + (" (disturbed)" if ort_disturbed else ""), ":"),
    ):
        if value:
            ax.axvline(value, color="black", ls=style, lw=1, label=f"{label} {value:,.0f} img/s")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("throughput, images/s (2xx only)")
    ax.set_ylabel("latency per request, ms (log)")
    machine = results.get("machine", {})
    ax.set_title(f"Vitrine vs peers: {machine.get('cpu_model', 'CPU')}, {machine.get('cpus', '?')} CPUs", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
