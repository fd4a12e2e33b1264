"""Getting the photos, the inventory, TFRecords and the input pipeline."""
