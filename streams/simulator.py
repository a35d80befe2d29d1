"""``intentflow simulate`` lives in the ``streams.simulate`` package; this module keeps the
CLI's entry point (``streams.simulator:simulate_command``) and the generator API importable
from one place."""

from streams.simulate import SimRecord, generate
from streams.simulate.cli import simulate_command

__all__ = ["SimRecord", "generate", "simulate_command"]
