"""The contract between training and serving, written down once.

`training/` exports a TorchScript model that honours this contract and `service/` consumes it;
neither imports the other. Four parts:

- `skeleton`: the canonical 17 joints (names, parents, flip permutation, root);
- `layout`: the exported model's input and outputs (names, dtypes, shapes, value conventions);
- `geometry`: the crop camera and the perspective "NDC" normalisation that map the model's
  normalised output back to image pixels and camera-space millimetres;
- `crop_image`: resampling an image into a crop (the same pixels for training and serving).
"""
