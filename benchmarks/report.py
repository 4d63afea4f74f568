"""Rebuild ``benchmarks/results/README.md``, ``SUMMARY.md`` and the PNG plots from the results JSON.

    python -m benchmarks.report
"""

from __future__ import annotations

import json

from ._harness import RESULTS

CASES = ("overhead", "backends", "scaling", "memory", "startup", "agreement")


def _load(name):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _ms(t):
    return f"{1e3 * t['median_s']:.2f}"


def _spread(t):
    return f"{1e3 * t['p10_s']:.2f}–{1e3 * t['p90_s']:.2f}"


def _table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def _mib(b):
    return f"{b / 2**20:.2f}"


def _machine(d):
    m = d["machine"]
    v = ", ".join(f"{k} {x}" for k, x in m["versions"].items())
    return (f"{m['platform']}, {m['cpus']} CPUs, Python {m['python']}; {v}; torch threads "
            f"{d.get('torch_threads')}; {'--quick' if d.get('quick') else 'full'} run of {m['date']}")


# ----------------------------------------------------------------------------- sections
def overhead_section(d):
    out = ["Median ms per call (p10–p90), interleaved with the raw code in the same run; ratio = pyneuralode / "
           "raw (goal ≤ 1.05). `dt0=0.01` gives pyneuralode raw diffrax's initial step, so the work is identical; "
           "plain `pn-jax` also spends Hairer's 2 initial-step evaluations.", ""]
    rows = [(r["mode"], r["family"], r["contender"], _ms(r["timing"]), _spread(r["timing"]), r["raw"],
             _ms(r["raw_timing"]), _spread(r["raw_timing"]), f"**{r['ratio']:.3f}**") for r in d["rows"]]
    out += _table(("mode", "gradient", "pyneuralode", "ms", "p10–p90", "raw", "ms", "p10–p90", "ratio"), rows)
    return out


def backends_section(d):
    out = ["Median ms per call (p10–p90), the backends interleaved; NFE = forward/backward evaluations of the "
           "last call. Spiral: `value_and_grad`; MNIST and CNF: one native training step.", ""]
    rows = [(r["problem"], r["dtype"], r["adjoint"] + (f" ({r['adjoint_used']})" if "adjoint_used" in r else ""),
             r["backend"], _ms(r["timing"]), _spread(r["timing"]), f"{r['nfe_forward']}/{r['nfe_backward']}")
            for r in d["rows"]]
    out += _table(("problem", "dtype", "adjoint", "backend", "ms", "p10–p90", "NFE F/B"), rows)
    if d.get("ratios"):
        out += ["", "Ratios (slower backend time / JAX time):", ""]
        out += _table(("problem", "dtype", "backend · adjoint", "vs", "ratio"),
                      [(r["problem"], r["dtype"], f"{r['backend']} · {r['adjoint']}", r["vs"],
                        f"**{r['ratio']:.2f}×**") for r in d["ratios"]])
    for name, reason in {**d.get("skipped_backends", {}), **d.get("notes", {})}.items():
        out.append(f"\n- skipped {name}: {reason}")
    return out


def scaling_section(d):
    out = [f"Settings: {d['settings']}", ""]
    s = d["series"]
    for key, label in (("batch", "batch"), ("width", "width"), ("tol", "rtol = atol")):
        rows = [(r[key] if key != "tol" else f"{r[key]:g}", r["backend"], r["adjoint"], _ms(r["timing"]),
                 _spread(r["timing"]), f"{r['nfe_forward']}/{r['nfe_backward']}") for r in s[key]]
        out += [f"**{label}**", ""] + _table((label, "backend", "adjoint", "ms", "p10–p90", "NFE F/B"), rows) + [""]
    return out


def memory_section(d):
    st = d["settings"]
    out = [st["method"], "", f"Steps per length multiplier k: {st['steps']}", ""]
    rows = []
    for p in d["points"]:
        if "error" in p:
            rows.append((p["backend"], p["adjoint"], p["multiplier"], "—", "—", "—", p["error"]))
            continue
        rows.append((p["backend"], p["adjoint"], f"{p['multiplier']:g}", p["steps"],
                     _mib(p["rss_delta_bytes"]) if "rss_delta_bytes" in p else "—",
                     _mib(p["temp_bytes"]) if "temp_bytes" in p else "—", f"{p['nfe_forward']}/{p['nfe_backward']}"))
    out += _table(("backend", "adjoint", "k", "steps", "peak RSS growth MiB", "JAX compiled temp MiB", "NFE F/B"),
                  rows)
    out += ["", "Growth from the shortest to the longest run (slope: log-log, 0 = flat, 1 = linear in length):", ""]
    rows = []
    for s in d["slopes"]:
        def f(k, fmt):
            return fmt(s[k]) if s.get(k) is not None else "—"
        rows.append((s["backend"], s["adjoint"], f("rss_growth_bytes", _mib), f("rss_bytes_per_step", lambda x:
                     f"{x / 1024:.1f}"), f("temp_growth_bytes", _mib), f("temp_bytes_per_step", lambda x:
                     f"{x / 1024:.2f}"), f("temp_slope", lambda x: f"{x:.2f}")))
    out += _table(("backend", "adjoint", "RSS growth MiB", "RSS KiB/step", "temp growth MiB", "temp KiB/step",
                   "temp slope"), rows)
    return out


def startup_section(d):
    imp = d["import_pyneuralode_s"]
    out = [f"`import pyneuralode` (numpy only), fresh interpreter: median **{1e3 * imp['median']:.0f} ms** "
           f"(min {1e3 * imp['min']:.0f}, max {1e3 * imp['max']:.0f}, n={imp['n']}).", ""]
    rows = [(b, f"{f['import_backend_libs_s']:.2f}", f"{f['first_call_s']:.2f}", f"{1e3 * f['second_call_s']:.1f}",
             f["n"]) for b, f in d["first_call"].items()]
    out += _table(("backend", "import libs s", "first value_and_grad s (compile)", "second call ms", "n"), rows)
    for name, reason in d.get("skipped_backends", {}).items():
        out.append(f"\n- skipped {name}: {reason}")
    return out


def agreement_section(d):
    out = [f"Settings: {d['settings']}", ""]
    rows = [(r["problem"], f"{r['tol']:g}", f"{r['a']} vs {r['b']}", f"{r['grad_rel_diff']:.2e}",
             f"{r['value_rel_diff']:.2e}", " / ".join(f"{k} {v[0]}/{v[1]}" for k, v in r["nfe"].items()))
            for r in d["rows"]]
    out += _table(("problem", "rtol = atol", "pair", "grad rel diff", "loss rel diff", "NFE F/B"), rows)
    for name, reason in {**d.get("skipped_backends", {}), **d.get("notes", {})}.items():
        out.append(f"\n- skipped {name}: {reason}")
    return out


SECTIONS = {"overhead": ("Overhead: pyneuralode vs raw diffrax / torchdiffeq (spiral)", overhead_section),
            "backends": ("Backends against each other", backends_section),
            "scaling": ("Scaling: batch, width, tolerance", scaling_section),
            "memory": ("Memory vs integration length", memory_section),
            "startup": ("Start-up", startup_section),
            "agreement": ("Agreement across backends", agreement_section)}


# ----------------------------------------------------------------------------- plots
def _plots(data):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig, name):
        path = RESULTS / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    d = data.get("overhead")
    if d and d.get("rows"):
        rows = d["rows"]
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.2))
        labels = [f"{r['mode']} · {r['family'] if r['family'] != '-' else 'no grad'} · {r['contender']}"
                  for r in rows]
        ax.barh(range(len(rows)), [r["ratio"] for r in rows],
                color=["tab:blue" if r["backend"] == "jax" else "tab:orange" for r in rows])
        ax.axvline(1.0, color="k", lw=0.8)
        ax.axvline(1.05, color="r", ls="--", lw=0.8, label="goal 1.05")
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("pyneuralode time / raw time (median)")
        ax.set_title("Overhead vs raw diffrax (blue) and raw torchdiffeq (orange)")
        ax.legend(fontsize=7)
        save(fig, "overhead.png")

    d = data.get("backends")
    if d and d.get("rows"):
        rows = d["rows"]
        keys = sorted({(r["problem"], r["dtype"], r["adjoint"]) for r in rows}, key=lambda k: [str(x) for x in k])
        backends = sorted({r["backend"] for r in rows})
        med = {(r["problem"], r["dtype"], r["adjoint"], r["backend"]): 1e3 * r["timing"]["median_s"] for r in rows}
        fig, ax = plt.subplots(figsize=(9, 0.4 * len(keys) + 1.5))
        h = 0.8 / len(backends)
        for i, b in enumerate(backends):
            ax.barh([j + i * h for j in range(len(keys))], [med.get((*k, b), 0) for k in keys], height=h, label=b)
        ax.set_yticks([j + 0.4 - h / 2 for j in range(len(keys))],
                      [f"{p.split(' (')[0]} {dt} {a}" for p, dt, a in keys], fontsize=7)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_xlabel("ms per call (median, log scale)")
        ax.set_title("Backends side by side")
        ax.legend(fontsize=8)
        save(fig, "backends.png")

    d = data.get("scaling")
    if d and d.get("series"):
        s = d["series"]
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for ax, key, label in ((axes[0], "batch", "batch size"), (axes[1], "width", "hidden width")):
            for b in sorted({r["backend"] for r in s[key]}):
                pts = [(r[key], 1e3 * r["timing"]["median_s"]) for r in s[key] if r["backend"] == b]
                ax.plot(*zip(*pts), "o-", label=b)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel("ms per value_and_grad")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        ax = axes[2]
        ax2 = ax.twinx()
        for b in sorted({r["backend"] for r in s["tol"]}):
            pts = [(r["tol"], 1e3 * r["timing"]["median_s"], r["nfe_forward"] + r["nfe_backward"])
                   for r in s["tol"] if r["backend"] == b]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"{b} time")
            ax2.plot([p[0] for p in pts], [p[2] for p in pts], "s--", alpha=0.6, label=f"{b} NFE F+B")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax2.set_yscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("rtol = atol")
        ax.set_ylabel("ms per value_and_grad")
        ax2.set_ylabel("NFE forward + backward")
        ax.legend(fontsize=7, loc="upper left")
        ax2.legend(fontsize=7, loc="lower right")
        fig.suptitle("Spiral network: scaling (JAX CheckpointAdjoint, torch DirectAdjoint)")
        save(fig, "scaling.png")

    d = data.get("memory")
    if d and d.get("points"):
        pts = [p for p in d["points"] if "error" not in p]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, key, title in ((axes[0], "rss_delta_bytes", "peak RSS growth (fresh process)"),
                               (axes[1], "temp_bytes", "JAX compiled temporaries (memory_analysis)")):
            for combo in sorted({(p["backend"], p["adjoint"]) for p in pts if key in p}):
                xs = [(p["multiplier"], max(p[key], 1) / 2**20) for p in pts
                      if (p["backend"], p["adjoint"]) == combo and key in p]
                ax.plot(*zip(*sorted(xs)), "o-", label=f"{combo[0]} {combo[1]}")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("integration length (× t1)")
            ax.set_ylabel("MiB")
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle("Memory vs integration length: backsolve should stay flat")
        save(fig, "memory.png")
    return written


# ----------------------------------------------------------------------------- summary
def _summary(data):
    lines = ["## Benchmarks", "",
             "Measured by `make bench` (`python -m benchmarks`; `make bench-quick` for a < 5 minute run), every "
             "comparison side by side in one run — interleaved calls, medians after warm-up, p10–p90 spread in "
             "[benchmarks/results/README.md](benchmarks/results/README.md). A small shared CPU makes absolute "
             "times noisy; the ratios are the figures to read.", ""]
    d = data.get("overhead")
    if d and d.get("rows"):
        lines += ["**Overhead** (spiral, float32, median pyneuralode / raw; goal ≤ 1.05, misses in bold). `solve`: "
                  "forward solve only; `grad`: loss + gradients; `step`: training step with Adam.", ""]
        rows = [(r["mode"], r["family"], r["contender"], r["raw"],
                 f"**{r['ratio']:.3f}**" if r["ratio"] > 1.05 else f"{r['ratio']:.3f}") for r in d["rows"]]
        lines += _table(("mode", "gradient", "pyneuralode", "vs", "ratio"), rows) + [""]
    d = data.get("backends")
    if d and d.get("ratios"):
        lines += ["**torch / JAX** (same model, weights and batch, interleaved; > 1: JAX faster, < 1: torch faster):",
                  ""]
        lines += _table(("problem", "dtype", "torch adjoint", "vs", "torch / JAX"),
                        [(r["problem"], r["dtype"], r["adjoint"], r["vs"], f"{r['ratio']:.1f}×")
                         for r in d["ratios"]]) + [""]
    d = data.get("memory")
    if d and d.get("slopes"):
        ks = d["settings"]["multipliers"]
        steps = d["settings"]["steps"]
        lines += [f"**Memory vs integration length** (t1 × {ks[0]} … × {ks[-1]}, {steps[str(ks[0])]} … "
                  f"{steps[str(ks[-1])]} solver steps): extra peak memory of the longest run over the shortest", ""]
        lines += _table(("backend", "adjoint", "peak RSS growth", "JAX compiled temp growth", "temp slope"),
                        [(s["backend"], s["adjoint"],
                          f"{_mib(s['rss_growth_bytes'])} MiB" if s.get("rss_growth_bytes") is not None else "—",
                          f"{_mib(s['temp_growth_bytes'])} MiB" if s.get("temp_growth_bytes") is not None else "—",
                          f"{s['temp_slope']:.2f}" if s.get("temp_slope") is not None else "—")
                         for s in d["slopes"]]) + [""]
    d = data.get("agreement")
    if d and d.get("rows"):
        lines += ["**Agreement** (float64, DirectAdjoint, identical weights): gradient max relative difference "
                  "between backends, and NFE forward/backward", ""]
        lines += _table(("problem", "rtol = atol", "pair", "grad rel diff", "NFE F/B"),
                        [(r["problem"], f"{r['tol']:g}", f"{r['a']} vs {r['b']}", f"{r['grad_rel_diff']:.1e}",
                          ", ".join(f"{k} {v[0]}/{v[1]}" for k, v in r["nfe"].items())) for r in d["rows"]]) + [""]
    d = data.get("startup")
    if d and d.get("import_pyneuralode_s"):
        fc = ", ".join(f"{b} {f['import_backend_libs_s']:.1f} s + {f['first_call_s']:.2f} s"
                       for b, f in d["first_call"].items())
        lines += [f"**Start-up**: `import pyneuralode` {1e3 * d['import_pyneuralode_s']['median']:.0f} ms (numpy "
                  f"only); backend libraries import + first `value_and_grad` (JAX compiles here): {fc}.", ""]
    for img in ("overhead", "backends", "scaling", "memory"):
        if (RESULTS / f"{img}.png").exists():
            lines.append(f"![{img}](benchmarks/results/{img}.png)")
    return lines


def generate():
    """Write README.md, SUMMARY.md and the plots; return the paths written."""
    data = {c: _load(c) for c in CASES}
    gpu = {c: _load(f"{c}.cuda") for c in CASES}
    lines = ["# Benchmark results", "",
             "Generated by `python -m benchmarks` (see `benchmarks/__main__.py`); do not edit by hand. "
             "Rebuild the tables and plots from the JSON with `python -m benchmarks --report-only`.", ""]
    for case, (title, section) in SECTIONS.items():
        d = data[case]
        lines += [f"## {title}", ""]
        if d is None:
            lines += ["_not run yet_", ""]
            continue
        lines += [f"_{_machine(d)}; wall {d.get('wall_s', 0):.0f} s_", ""]
        if "error" in d or "skipped" in d:
            lines += [f"Not measured: {d.get('error') or d.get('skipped')}", ""]
            continue
        lines += section(d) + [""]
        if (RESULTS / f"{case}.png").exists():
            lines += [f"![{case}]({case}.png)", ""]
    lines += ["## GPU (`--device cuda`)", ""]
    ran = {c: d for c, d in gpu.items() if d is not None}
    if not ran:
        lines += ["_no GPU run recorded_ (run `python -m benchmarks --device cuda` on a CUDA machine)", ""]
    for case, d in ran.items():
        lines += [f"### {SECTIONS[case][0]} (cuda)", "", f"_{_machine(d)}_", ""]
        if "error" in d or "skipped" in d:
            lines += [f"Not measured: {d.get('error') or d.get('skipped')}", ""]
        else:
            lines += SECTIONS[case][1](d) + [""]
    written = _plots({c: d for c, d in data.items() if d and "error" not in d and "skipped" not in d})
    readme = RESULTS / "README.md"
    readme.write_text("\n".join(lines))
    summary = RESULTS / "SUMMARY.md"
    summary.write_text("\n".join(_summary({c: d for c, d in data.items()
                                           if d and "error" not in d and "skipped" not in d})) + "\n")
    return [readme, summary, *written]


if __name__ == "__main__":
    for p in generate():
        print(f"wrote {p}")
