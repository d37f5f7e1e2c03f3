"""PySide6 windows, panels and workers: the only place that imports Qt."""
