"""napari host: reader, sample data and the AuralSAM2 dock widget (see napari.yaml and docs/napari.md)."""
