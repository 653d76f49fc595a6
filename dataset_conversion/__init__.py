"""Dataset conversion: the public datasets of the GSD-Net paper → nnU-Net v2 raw datasets with
reproducible simulated label noise (installed as ``nnunet_gsd.dataset_conversion``).

One module per idea: :mod:`.model` (data model), :mod:`.sources` (finding and pairing files),
:mod:`.reading` (reading and validating files), :mod:`.resizing`, :mod:`.noise` (docs/noise.md),
:mod:`.splitting` (split, subset, raters), :mod:`.writing` (files and the atomic install),
:mod:`.provenance` (the ``"gsd"`` block of dataset.json), :mod:`.convert` (the pipeline), and one
module per dataset (:mod:`.kvasir` …) that only finds its files.
"""
