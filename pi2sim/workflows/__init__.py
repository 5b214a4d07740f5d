"""Workflows: what a study does with many runs (sweeps, the planner, validation against the
paper, calibration, regression goldens, side-by-side comparison). They sit on top of
:mod:`pi2sim.simulation`; nothing below them imports them (docs/architecture.md)."""
