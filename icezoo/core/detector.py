"""IceCube-86 and ice constants used across icezoo (sources in docs/simulator.md; one definition each)."""

#: speed of light in vacuum, m/ns
C_VACUUM = 0.299792458
#: group refractive index of ice at 400 nm
N_GROUP = 1.35634
#: group speed of light in ice, m/ns (0.2210)
C_ICE = C_VACUUM / N_GROUP
#: depth below the surface = SURFACE_Z - z (metres; Kaggle/ppc detector frame)
SURFACE_Z = 1948.07
#: number of in-ice DOMs of IceCube-86 (sensor_id 0..5159)
N_SENSORS = 5160
#: strings of IceCube-86 (1..86, DeepCore 79..86) and DOMs per string (1..60): sensor_id = (string - 1) * 60 + dom - 1
N_STRINGS = 86
DOMS_PER_STRING = 60
#: sensor_id written into padded slots; real sensors are 0..5159 (sensor 0 is real, so never 0)
PAD_SENSOR = N_SENSORS
#: bounding box of the in-ice DOMs of the shipped geometry table (x, y, z in metres; a test checks it
#: against the table): the "min-max normalised" units of EXP_03-08
DETECTOR_MIN = (-570.9, -521.08, -512.82)
DETECTOR_MAX = (576.37, 509.5, 524.56)
