"""Experiments: does selecting training frames by quality metrics beat a random sample of the same
budget? A spec (:mod:`.spec`) names the data, the noise, the detector and the arms; :mod:`.data`
makes the data, the noise draw(s) and the metrics; :mod:`.arms` selects, trains and evaluates one
arm for one seed; :mod:`.run` runs every arm x seed and writes the summary.

Data flows one way: data -> noise -> metrics -> select -> train -> evaluate -> summary.
"""
from .arms import run_arm
from .data import DataFiles, Replicate, compute_metrics, prepare_data
from .run import run_experiment, summarize_experiment
from .spec import Spec, load_spec

__all__ = ["DataFiles", "Replicate", "Spec", "compute_metrics", "load_spec", "prepare_data", "run_arm",
           "run_experiment", "summarize_experiment"]
