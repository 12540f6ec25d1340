"""Which stage code computes what earlier code computed (pipeline.core.stage reads it): the digests of checked
changes, mapped to the digest of the code they replaced."""

# Stage code changed without changing what the stage computes, and checked where it counts (train: a full-size
# `default` trained again to the same submission, byte for byte; docs/experiments.md), keeps the digest of the code
# it replaced, so the results made before stay current. Only that exact source text is mapped: any later edit
# has a digest of its own, and reruns the stage as usual.
SAME_RESULTS = {
    "train": {
        "897c6e99270697d6": "3751b71d2ecb83b8",  # 0f475e5: training stops at a loss that is not finite
        "8efe2c4a45ebca79": "3751b71d2ecb83b8",  # 18eccc9: and a damaged checkpoint trains its model again
        "fa7166f342702287": "3751b71d2ecb83b8",  # 2e67ad5: and "starting Ray" is said once under tune
        "b497bcdcc8b09bf9": "3751b71d2ecb83b8",  # 60d7d84: and a local Ray instance's files in a folder of its own
        # 74e8868 (stop 59): options that change no model refused, warnings, Ray's signals, the run folder's mark.
        # Outside the check: a run mixing the mlp or small with another network under --recalibrate now counts the
        # recalibration of the other alone (its models are the same).
        "f515c7784a9e474b": "3751b71d2ecb83b8",
        # and --alternate's help says a run of one model is refused: settings.py's syntax tree is 74e8868's but for
        # that string (checked with ast.dump), which no result reads
        "161c9233c3f8774e": "3751b71d2ecb83b8",
        # b223884 (stop 60): warnings for an emulated precision under Ray and for no pseudo-label, Ray's start-up
        # keeping SIGTERM for the command. Checked at f7d87c5 (full-size `default`, the same four files as 74e8868's,
        # byte for byte); since then only the Ray start-up's handling of an ignored SIGHUP, which a local run never
        # reaches.
        "9ca8bc8f84e07162": "3751b71d2ecb83b8",
    },
    # Stop 59 (74e8868): predict's modules gained training.plan's and training.device's new helpers; the full-size
    # `default` above predicted the same submission and test probabilities, byte for byte.
    "predict": {"cfb98110013d18c1": "8e279a3612dc95ca",
                # Stop 60 (b223884): a file of the run holding the same labels is taken instead of a copy; the same
                # full-size check (f7d87c5), and the upgrade from 74e8868's root predicted nothing again
                "d65553a1a869da0a": "8e279a3612dc95ca"},
    # Stop 58 (from 2798bb6), checked on the sample: the same raw files and the same report folder, byte for byte.
    "download": {"1a6515b8f3180bd5": "f7c7da3d0e39ad19",  # a mark until its record; advice words
                 "17a4e10af340b834": "f7c7da3d0e39ad19"},  # stop 60: a folder holding the zip named; sample checked
    "report": {"2d9c6ef5d8e3cacd": "d51c30183af82d91"},  # a page submit rewrote becomes the stage's record
}
