"""Published reference numbers (CIFAR-100) and their comparison with ours."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

__all__ = ["DEFAULT_CSV", "load_published", "is_cifar100", "compare", "convention", "epoch_convention"]

DEFAULT_CSV = Path(__file__).parent / "data" / "cifar100_published.csv"


def load_published(published: str | Path | pd.DataFrame | None = None) -> pd.DataFrame:
    """The reference table (columns teacher, student, method, top1, protocol, source)."""
    if isinstance(published, pd.DataFrame):
        df = published.copy()
    else:
        df = pd.read_csv(DEFAULT_CSV if published is None else published)
    missing = {"teacher", "student", "method", "top1"} - set(df.columns)
    if missing:
        raise ValueError(f"published table lacks columns {sorted(missing)}")
    for c in ("protocol", "source"):
        if c not in df.columns:
            df[c] = ""
    df[["protocol", "source"]] = df[["protocol", "source"]].fillna("")
    return df


def is_cifar100(dataset: str) -> bool:
    return dataset.lower().replace("-", "").replace("_", "") == "cifar100"


def epoch_convention(protocol: str) -> str:
    """Which epoch a published number is: ``"last"``, ``"best"``, or ``"not stated"``."""
    p = str(protocol).strip().lower()
    if p.startswith("last-epoch") or p.startswith("last epoch"):
        return "last"
    if p.startswith("best-epoch") or p.startswith("best epoch"):
        return "best"
    return "not stated"


def is_best_epoch(protocol: str) -> bool:
    return epoch_convention(protocol) == "best"


def convention(protocol: str) -> str:
    """A short label of the published convention, read from the ``protocol`` column.

    'last-epoch top-1 (...)' -> 'last epoch'; 'best-epoch top-1, mean of 5 runs (...)' ->
    'best epoch, mean of 5 runs'; a protocol that states neither the epoch nor the runs ->
    'epoch not stated' (plus 'likely best' and 'mean of ? runs' where the text says so).
    """
    p = str(protocol).lower()
    epoch = epoch_convention(protocol)
    parts = [f"{epoch} epoch" if epoch != "not stated" else
             "epoch not stated" + (" (likely best)" if "likely best" in p else "")]
    m = re.search(r"mean of (\d+) runs", p)
    if m:
        parts.append(f"mean of {m.group(1)} runs")
    elif re.search(r"mean\+/-std over repeated runs", p):
        sd = re.search(r"prints [0-9.]+\+/-([0-9.]+)", p)
        parts.append("mean of ? runs" + (f", std {sd.group(1)}" if sd else ""))
    elif re.search(r"average over an unstated number of runs|mean over an unstated number", p):
        parts.append("mean of ? runs")
    return ", ".join(parts)


def short_protocol(protocol: str) -> str:
    """'last-epoch top-1 (RepDistiller ...)' -> 'last-epoch top-1'."""
    return str(protocol).split(" (")[0].strip()


def compare(published: pd.DataFrame, ours_last: pd.DataFrame, ours_best: pd.DataFrame,
            teacher: dict[str, float], pairs: list[str], methods: list[str],
            pair_models) -> pd.DataFrame:
    """Rows (pair, method) present both in our tables and in ``published``.

    ours_last / ours_best: cell_stats frames (index (method, pair); columns n, mean, ...);
    teacher: pair -> teacher top-1. ``diff`` is ours minus published, taken against our
    number with the same protocol as the published one (best-epoch vs last-epoch).
    Order: grid pair order, then teacher, then our method order.
    """
    rows = []
    for p in pairs:
        t, s = pair_models(p)
        pub = published[(published["teacher"] == t) & (published["student"] == s)]
        if pub.empty:
            continue
        for m in ["teacher", *methods]:
            hit = pub[pub["method"] == m]
            if hit.empty:
                continue
            if m == "teacher":
                if p not in teacher:
                    continue
                last = best = teacher[p]
                n = None
            else:
                if ours_last.at[(m, p), "n"] == 0:
                    continue
                last, best = ours_last.at[(m, p), "mean"], ours_best.at[(m, p), "mean"]
                n = int(ours_last.at[(m, p), "n"])
            for _, r in hit.iterrows():
                ours = best if is_best_epoch(r["protocol"]) else last
                rows.append({"pair": p, "method": m, "n": n, "ours_last": last, "ours_best": best,
                             "published": float(r["top1"]), "diff": ours - float(r["top1"]),
                             "vs_best": is_best_epoch(r["protocol"]),
                             "protocol": r["protocol"], "source": r["source"]})
    return pd.DataFrame(rows, columns=["pair", "method", "n", "ours_last", "ours_best", "published",
                                       "diff", "vs_best", "protocol", "source"])
