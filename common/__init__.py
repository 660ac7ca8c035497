"""Small helpers shared by every package: atomic writes and seed derivation. No params, no paths."""

# The project's packages: pyproject.toml's [tool.setuptools] packages (a test holds the two together). The
# GAN's run key hashes their sources; the dvc.yaml tests follow imports within them.
PACKAGES = ("common", "imaging", "dcgan", "evaluation", "pipeline")
