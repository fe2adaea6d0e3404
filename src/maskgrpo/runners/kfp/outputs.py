"""Re-export of :mod:`maskgrpo.stages.outputs` (the stage mains write the KFP UI outputs)."""

from maskgrpo.stages.outputs import executor_output, scalar_metrics, write_kfp_outputs

__all__ = ["executor_output", "scalar_metrics", "write_kfp_outputs"]
