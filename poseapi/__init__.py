"""The wire contract of MargiPose Serve's API v1, shared by the server and its clients.

What travels between them and nothing else: the heatmap payload codec (`poseapi.heatmaps`)
and the small values both sides hold (`poseapi.values`). It needs numpy (and Pillow for PNG
heatmaps), never the server's dependencies.
"""
