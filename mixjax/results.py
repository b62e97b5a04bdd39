"""``results.json``: the per-run summary the benchmark's tables are built from.

Reporting rules (OpenMixup spec §5): CNN rows report the median top-1 of the last 5 (100-epoch runs) or last 10
(300-epoch runs) evaluations; transformer rows report the best top-1. We store all of them plus the full eval
history, so the table builder can apply either rule. Our medians take exactly the last N evaluations (the
reference script's inclusive bound can take N+1). AutoMix/SAMix runs also hold the same statistics of their
momentum encoder (``top1_momentum_*``); the reference reports the better of the two encoders, and so does
:func:`reported_top1`.
"""

from __future__ import annotations

import json
import os
import statistics

from etils import epath


def _median_last(values: list[float], n: int) -> float | None:
  return float(statistics.median(values[-n:])) if values else None


def summarize(
  history: list[dict], *, epochs_done: int, total_epochs: int, config_json: dict, status: str, extra: dict | None = None
) -> dict:
  """The summary; ``extra`` adds keys such as ``reason`` (why a run failed), ``data_warnings``, ``preemption``."""
  top1 = [h["top1"] for h in history]
  momentum = [h["top1_momentum"] for h in history if "top1_momentum" in h]
  if momentum:  # AutoMix/SAMix: the momentum encoder k is evaluated beside the online encoder q
    extra = {
      **(extra or {}),
      "top1_momentum_last": momentum[-1],
      "top1_momentum_best": max(momentum),
      "top1_momentum_median_last5": _median_last(momentum, 5),
      "top1_momentum_median_last10": _median_last(momentum, 10),
    }
  return {
    **(extra or {}),
    "status": status,
    "epochs_done": epochs_done,
    "total_epochs": total_epochs,
    "top1_last": top1[-1] if top1 else None,
    "top1_best": max(top1) if top1 else None,
    "top1_median_last5": _median_last(top1, 5),
    "top1_median_last10": _median_last(top1, 10),
    "top5_last": history[-1]["top5"] if history else None,
    "history": history,
    "config": config_json,
  }


def write_results(workdir: str, results: dict) -> str:
  """Writes ``workdir/results.json`` atomically (temp file + rename), so a reader never sees half a file."""
  path = epath.Path(workdir) / "results.json"
  tmp = epath.Path(workdir) / ".results.json.tmp"
  tmp.write_text(json.dumps(results, indent=2, sort_keys=True))
  os.replace(os.fspath(tmp), os.fspath(path))
  return os.fspath(path)


def reported_top1(results: dict, field: str) -> float | None:
  """``results[field]`` (e.g. ``top1_median_last5``), or the momentum encoder's figure where that is better."""
  values = [results.get(field), results.get(field.replace("top1_", "top1_momentum_", 1))]
  values = [v for v in values if v is not None]
  return max(values) if values else None
