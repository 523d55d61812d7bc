"""Prometheus text exposition (format 0.0.4) of the server's counters, written by hand.

A few families do not justify a client library: `MetricsText` collects `# HELP`/`# TYPE`
headers and samples, escapes label values, and renders histograms with cumulative `le`
buckets, `_sum` and `_count` as the format requires.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


class MetricsText:
    """Builds one exposition; each family is declared once with its samples."""

    def __init__(self, prefix: str = "viper_") -> None:
        self._prefix = prefix
        self._lines: list[str] = []

    def _header(self, name: str, kind: str, help_text: str) -> str:
        full = self._prefix + name
        self._lines.append(f"# HELP {full} {_escape(help_text)}")
        self._lines.append(f"# TYPE {full} {kind}")
        return full

    def gauge(
        self, name: str, help_text: str, samples: Mapping[tuple[tuple[str, str], ...], float]
    ) -> None:
        """A gauge family; `samples` maps label pairs to values (`()` for no labels)."""
        full = self._header(name, "gauge", help_text)
        for labels, value in samples.items():
            self._lines.append(f"{full}{_labels(dict(labels))} {_number(value)}")

    def counter(
        self, name: str, help_text: str, samples: Mapping[tuple[tuple[str, str], ...], float]
    ) -> None:
        """A counter family; `name` without `_total`, which is appended (as 0.0.4 writers do)."""
        full = self._header(f"{name}_total", "counter", help_text)
        for labels, value in samples.items():
            self._lines.append(f"{full}{_labels(dict(labels))} {_number(value)}")

    def histogram(
        self,
        name: str,
        help_text: str,
        buckets: Sequence[float],
        cumulative: Sequence[int],
        total: float,
        count: int,
    ) -> None:
        """A histogram: `cumulative[i]` observations were <= `buckets[i]`.

        A `+Inf` bucket is added from `count` unless `buckets` already ends with infinity.
        """
        full = self._header(name, "histogram", help_text)
        for bound, n in zip(buckets, cumulative, strict=True):
            if not math.isinf(bound):
                self._lines.append(f'{full}_bucket{{le="{float(bound)!r}"}} {n}')
        self._lines.append(f'{full}_bucket{{le="+Inf"}} {count}')
        self._lines.append(f"{full}_sum {_number(total)}")
        self._lines.append(f"{full}_count {count}")

    def render(self) -> str:
        """The exposition text, newline-terminated."""
        return "\n".join(self._lines) + "\n"
