"""``results.json``: the per-run summary the benchmark's tables are built from.

Reporting rules (OpenMixup spec §5): CNN rows report the median top-1 of the last 5 (100-epoch runs) or last 10
(300-epoch runs) evaluations; transformer rows report the best top-1. We store all of them plus the full eval
history, so the table builder can apply either rule. Our medians take exactly the last N evaluations (the
reference script's inclusive bound can take N+1). AutoMix/SAMix runs also hold the same statistics of their
momentum encoder (``top1_momentum_*``) and, with two heads (``config.model.mix_head``), of the mixup head of each
encoder (``top1_mixhead_*``, ``top1_momentum_mixhead_*``); the reference's summary takes, per encoder, the better
head and then the better encoder, i.e. the best of these figures, and so does :func:`reported_top1`.
"""

from __future__ import annotations

import json
import os
import statistics

from etils import epath


# The history fields of the other evaluated encoders/heads, each summarised like ``top1``.
OTHER_HEADS = ("top1_momentum", "top1_mixhead", "top1_momentum_mixhead")


def _median_last(values: list[float], n: int) -> float | None:
  return float(statistics.median(values[-n:])) if values else None


def summarize(
  history: list[dict], *, epochs_done: int, total_epochs: int, config_json: dict, status: str, extra: dict | None = None
) -> dict:
  """The summary; ``extra`` adds keys such as ``reason`` (why a run failed), ``data_warnings``, ``preemption``."""
  top1 = [h["top1"] for h in history]
  for field in OTHER_HEADS:  # AutoMix/SAMix: the momentum encoder k (and the mixup heads) beside q's head
    values = [h[field] for h in history if field in h]
    if values:
      extra = {
        **(extra or {}),
        f"{field}_last": values[-1],
        f"{field}_best": max(values),
        f"{field}_median_last5": _median_last(values, 5),
        f"{field}_median_last10": _median_last(values, 10),
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
  """``results[field]`` (e.g. ``top1_median_last5``), or the same figure of another evaluated encoder or head
  (``OTHER_HEADS``) where that is better."""
  values = [results.get(field), *(results.get(field.replace("top1", other, 1)) for other in OTHER_HEADS)]
  values = [v for v in values if v is not None]
  return max(values) if values else None
