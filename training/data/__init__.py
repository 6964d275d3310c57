"""Training data: dataset readers that all yield `training.data.sample.Sample`."""
