"""MargiPose training: model, geometry, losses, metrics, data, engine and export."""
