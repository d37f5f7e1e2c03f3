"""Launchers for real peers (DCMTK, Orthanc, PostgreSQL) shared by tests and benchmarks.

Plain Python with no pytest dependency, so `bench/` can import them too.
"""
