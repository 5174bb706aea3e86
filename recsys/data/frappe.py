"""Frappe app-usage log in libFM format (Baltrunas et al., "Frappe: Understanding the Usage and
Perception of Mobile App Recommendations In-The-Wild", arXiv:1505.03014, 2015), as used by NFM
(He & Chua, SIGIR 2017) and the CTR benchmarks after it.

Raw format: one row per line, space separated, a label 1 (the user used the app in that context)
or -1 (a sampled negative), then ten one-hot fields as `index:1` with global libFM indices:

    1 266:1 1244:1 5042:1 ...      user, item, daytime, weekday, isweekend, homework, cost, weather, country, city

Prepared as: label 1 -> 1.0, -1 -> 0.0; each field's libFM index is its id. No dense features.
"""

from __future__ import annotations

from recsys.data.fields import Label, LibFMIndex
from recsys.data.text import TextFormat

FRAPPE_FIELDS = ("user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city")

FRAPPE_FORMAT = TextFormat(
    name="frappe",
    title="libFM (Frappe)",
    separator=" ",
    fields=(("label", Label(positive=1, negative=-1)), *((name, LibFMIndex()) for name in FRAPPE_FIELDS)),
)
