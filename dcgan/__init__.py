"""The DCGAN: networks (models), objectives (losses), DiffAugment (augment) and the training loop (train).
Library code: no files, no params."""
