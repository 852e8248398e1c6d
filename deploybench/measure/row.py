"""The measured columns of a cell's row, laid out once from the phases' and the figures' records, in phase
order (the Parquet file orders its columns by the catalogue, so this order is for reading a row)."""

from __future__ import annotations

import json

from deploybench.measure.records import CellFigures, columns
from deploybench.measure.runs import Measured


def measured_columns(measured: Measured, figures: CellFigures) -> dict:
    idle = measured.idle.reading
    return {
        **columns(measured.ceilings),
        "power_limit_w": measured.idle.power_limit_w,
        **columns(measured.ready.load),
        "generation_settings_json": measured.ready.settings.to_json(),
        **columns(measured.ready.facts),
        "idle_cooldown_s_measured": idle.cooldown_s,
        "idle_temp_c_start": idle.temp_c_start,
        "idle_temp_c_end": idle.temp_c_end,
        "phase_wall_s_json": json.dumps(measured.phase_wall_s),
        **columns(figures),
    }
