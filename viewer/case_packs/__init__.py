"""De-identified case packs for teaching and development: the builder and the PS3.15 Annex E table it
applies."""
