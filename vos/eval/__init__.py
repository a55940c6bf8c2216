"""Benchmark metrics: DAVIS 2017 J&F (``davis``) and class-agnostic video AR/AP (``uvo``)."""
