"""Training: one architecture on the TFRecords, resumable (`flowerlab train`, rule train_model)."""
