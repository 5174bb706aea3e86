"""Avazu click logs (Kaggle's CTR prediction competition, 2014): the raw format.

Raw format: CSV without quoting, 24 fields; train.csv starts with this header, other files may not:

    id, click, hour, C1, banner_pos, site_id, site_domain, site_category, app_id, app_domain,
    app_category, device_id, device_ip, device_model, device_type, device_conn_type, C14 .. C21

Prepared as: `click` the label; `id` dropped (a row id carries no signal); `hour` (YYMMDDHH) split
into `hour_of_day` and `hour_weekday`, as CTR libraries do; the 8-digit hex ids (site_*, app_*,
device_id, device_ip, device_model) -> int(hex, 16); the integer codes kept as ids (C20's -1 is
Avazu's own "none" and stays a category). No dense features.
"""

from __future__ import annotations

from recsys.data.fields import Hex, HourOfDay, Ignored, Kind, Label
from recsys.data.text import TextFormat

HEX_FIELDS = (
    "site_id",
    "site_domain",
    "site_category",
    "app_id",
    "app_domain",
    "app_category",
    "device_id",
    "device_ip",
    "device_model",
)

AVAZU_FORMAT = TextFormat(
    name="avazu",
    title="Avazu CSV",
    separator=",",
    header=True,
    fields=(
        ("id", Ignored()),
        ("click", Label()),
        ("hour", HourOfDay()),
        ("C1", Kind()),
        ("banner_pos", Kind()),
        *((name, Hex()) for name in HEX_FIELDS),
        ("device_type", Kind()),
        ("device_conn_type", Kind()),
        *((f"C{index}", Kind()) for index in range(14, 22)),
    ),
)
