"""What a run reads and writes: Parquet log partitions, checkpoints, MLflow tracking, figures, and
the comparison of tracked runs. Imports only the engine's base modules (errors, faults, config)."""
