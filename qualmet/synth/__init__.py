"""The embedded default data set: procedurally drawn pandas in a bamboo forest, with exact boxes."""
from .generate import generate
from .scene import render_frame

__all__ = ["generate", "render_frame"]
