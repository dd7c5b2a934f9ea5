"""IceCube-86 and ice constants used across icezoo (physics.md; one definition each)."""

#: speed of light in vacuum, m/ns
C_VACUUM = 0.299792458
#: group refractive index of ice at 400 nm
N_GROUP = 1.35634
#: group speed of light in ice, m/ns (0.2210)
C_ICE = C_VACUUM / N_GROUP
#: depth below the surface = SURFACE_Z - z (metres; Kaggle/ppc detector frame)
SURFACE_Z = 1948.07
#: bounding box of the 5160 in-ice DOMs (x, y, z in metres): the "min-max normalised" units of EXP_03-08
DETECTOR_MIN = (-570.9, -521.1, -512.8)
DETECTOR_MAX = (576.4, 509.5, 524.6)
