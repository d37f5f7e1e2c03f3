"""Qt-free state of the reading workstation: pixel pipeline, geometry, viewer, browser, GSPS.

Nothing here imports Qt or VTK, so all of it is testable without a display (tests/unit).
"""
