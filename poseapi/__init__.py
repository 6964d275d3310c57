"""The wire contract of MargiPose Serve's API v1, shared by the server and its clients.

What travels between them, and what both sides make of it:

- `grpc_gen`: the pose.v1 stubs generated from proto/ (`make proto`), for grpcio and protobuf;
- `schemas`: REST's JSON models (pydantic: the server builds its answers with them, FastAPI
  documents them; clients read the JSON without them);
- `heatmaps`: the heatmap payload codec (float16 bytes or a PNG of tiles);
- `values`: the small values both sides hold (a person box, the model that answered);
- `render`: the picture /v1/render answers, drawn from a result by the server or a client.

It needs numpy, Pillow, and for the stubs grpcio and protobuf; only `schemas` needs pydantic.
"""
