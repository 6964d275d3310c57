"""MargiPose Serve: the REST and gRPC gateway over one transport-free core."""
