"""Server side of stroke perfusion (issue 6, "Server integration").

``recognise`` decides from index rows whether a series is perfusion (an examine() with a
confidence, as 3D Slicer's DICOMPlugin); ``service`` watches arrivals, runs evaluations as
jobs of the server's job queue in worker processes and stores results through
``ServerContext.store()``.
"""
