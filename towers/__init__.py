"""Torch models of the simulator's learners.

Shape legend: B examples, D embedding dimension, N items, U users.
Every ``forward`` states its input and output shapes.
"""
