"""One look for every plot the project writes: a distinct (colour, line style, marker) per series,
fixed styles for the series a reader looks for first, legends outside the axes, and writing that
never fails a benchmark.

The named series ("plain", "learned", "cost-model", "oracle", "llama.cpp") keep the same style in
every plot, and no other series shares their colours. Any other series takes the next style of a
cycle of 25 colours x 4 line styles x 11 markers, so up to 25 series differ in colour and any two
of the first 1,100 differ in the whole triple; bars take the colour, hatched from the 26th on.

Uses matplotlib's `Figure` directly (the Agg canvas, no pyplot state), so it is safe in servers
and tests. Imports nothing of the project, so every package may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable


@dataclass(frozen=True)
class SeriesStyle:
    """How one series is drawn; `line_kwargs()` for plot(), `bar_kwargs()` for bar()/barh()."""

    color: str
    linestyle: str
    marker: str
    linewidth: float = 1.4
    markersize: float = 4.0
    hatch: str = ""             # bars: plain colours first, hatched once the colours come round again

    def line_kwargs(self) -> dict:
        return {"color": self.color, "linestyle": self.linestyle, "marker": self.marker,
                "linewidth": self.linewidth, "markersize": self.markersize}

    def bar_kwargs(self) -> dict:
        return {"color": self.color, "hatch": self.hatch, "edgecolor": "white", "linewidth": 0.5}


NAMED: dict[str, SeriesStyle] = {
    "plain": SeriesStyle("#000000", "-", "o", 2.4, 5.0),
    "learned": SeriesStyle("#d62728", "-", "*", 2.6, 8.0),
    "cost-model": SeriesStyle("#1f77b4", "--", "D", 2.2, 5.0),
    "oracle": SeriesStyle("#7f7f7f", ":", "^", 2.4, 6.0),
    "llama.cpp": SeriesStyle("#8c564b", "-.", "P", 2.2, 6.0),
}
ALIASES = {"cost_model": "cost-model", "costmodel": "cost-model", "llamacpp": "llama.cpp",
           "llama-cpp": "llama.cpp", "llamacpp-plain": "llama.cpp", "llama.cpp-plain": "llama.cpp"}
PREFIXES = ("static:", "ours-")
# tab10 without the named colours, tab20b's two darker shades, tab20's light shades (named hues left out)
COLORS = ("#ff7f0e", "#2ca02c", "#9467bd", "#e377c2", "#bcbd22", "#17becf",
          "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173",
          "#5254a3", "#8ca252", "#bd9e39", "#ad494a", "#a55194",
          "#ffbb78", "#98df8a", "#c5b0d5", "#f7b6d2", "#dbdb8d", "#9edae5", "#aec7e8", "#ff9896", "#c49c94")
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "v", "D", "<", ">", "p", "h", "X", "d")
HATCHES = ("", "//", "..", "xx")


def named_role(name: str) -> str | None:
    """The named series `name` stands for ("cost_model" -> "cost-model", "static:plain" -> "plain",
    "ours-learned" -> "learned", "llamacpp-plain" -> "llama.cpp"), or None."""
    key = name.strip().lower()
    for prefix in PREFIXES:
        key = key.removeprefix(prefix)
    key = ALIASES.get(key, key)
    return key if key in NAMED else None


def auto_style(index: int) -> SeriesStyle:
    """The `index`-th style of the cycle for series without a fixed style."""
    return SeriesStyle(COLORS[index % len(COLORS)], LINESTYLES[index % len(LINESTYLES)], MARKERS[index % len(MARKERS)],
                       hatch=HATCHES[index // len(COLORS) % len(HATCHES)])


def series_styles(names: Iterable[str], roles: dict[str, str] | None = None) -> dict[str, SeriesStyle]:
    """A style per series, pairwise distinct: a named series (by `roles[name]`, else by its name)
    takes its fixed style, once per plot; every other series the next style of the cycle."""
    roles = roles or {}
    styles: dict[str, SeriesStyle] = {}
    taken: set[str] = set()
    next_auto = 0
    for name in names:
        if name in styles:
            continue
        role = roles.get(name) or named_role(name)
        if role in NAMED and role not in taken:
            taken.add(role)
            styles[name] = NAMED[role]
        else:
            styles[name] = auto_style(next_auto)
            next_auto += 1
    return styles


def new_figure(width: float = 8.0, height: float = 5.0, ncols: int = 1, **subplots):
    """A figure that belongs to no pyplot state (closing is not needed) and its axes, one row."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(1, ncols, squeeze=False, **subplots)[0]
    return fig, list(axes)


def legend_outside(fig, ax=None, title: str | None = None) -> None:
    """One readable legend to the right of the axes (of `ax`, else of the whole figure), never over the data."""
    source = ax if ax is not None else fig.axes[0]
    handles, labels = source.get_legend_handles_labels()
    if not handles:
        return
    ncol = 1 if len(handles) <= 22 else 2
    if ax is not None:
        ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8,
                  ncol=ncol, title=title, title_fontsize=8, frameon=False)
    else:
        fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8, ncol=ncol,
                   title=title, title_fontsize=8, frameon=False)


def save_figure(fig, path: Path) -> Path:
    """Write `fig` as a PNG; the bounding box grows to take in a legend outside the axes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def write_plots(build: Callable[[dict], dict], data: dict, out_dir: Path, stem: str) -> list[Path]:
    """`build(data)` -> {suffix: figure}, each written to `out_dir/<stem>_<suffix>.png`. A plotting
    error never fails the caller (a benchmark that ran for an hour): it prints one warning line."""
    try:
        return [save_figure(fig, Path(out_dir) / f"{stem}_{suffix}.png") for suffix, fig in build(data).items()]
    except Exception as error:     # noqa: BLE001 - any plotting failure is only a warning
        print(f"warning: plots of {stem} not written: {type(error).__name__}: {error}", flush=True)
        return []
