"""Evaluation: validation quality and cost of a trained model, collected into one table."""
