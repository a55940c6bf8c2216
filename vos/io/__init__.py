"""Reading and writing frames, masks and results (the only modules that touch the disk)."""
