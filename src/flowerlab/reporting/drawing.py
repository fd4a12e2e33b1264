"""The drawing function of each figure of the report's table (`captions.FIGURES` names it as
"module.function"). The modules are imported here, not looked up by name, so that the report's
code fingerprint follows them: editing a figure's code reruns the report. `captions` itself
imports no plotting library (the Snakefile imports it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flowerlab.reporting import captions, figures, photo_figures, time_figures

MODULES = {"figures": figures, "photo_figures": photo_figures, "time_figures": time_figures}


def drawing_function(name: str) -> Callable[..., Any]:
    """The function that draws figure `name`; KeyError for a figure the table does not list."""
    if name not in captions.FIGURES:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(captions.FIGURES)}")
    module, function = captions.FIGURES[name].draws.split(".")
    return getattr(MODULES[module], function)
