"""Names that params.yaml may use, kept free of heavy imports so validation stays fast."""

TORCHVISION_DATASETS = ("mnist", "fashion_mnist", "cifar10")
DATASETS = ("shapes", *TORCHVISION_DATASETS, "imagefolder")
SCHEDULES = ("linear", "scaled_linear", "cosine", "sigmoid")
PREDICTIONS = ("epsilon", "sample", "v_prediction")
SAMPLERS = ("ddpm", "ddim", "dpm_solver_pp", "dpm_solver_pp_sde", "heun")
SPACINGS = ("leading", "trailing", "linspace")
TIMESTEP_SAMPLING = ("uniform", "importance")  # how training draws t (diffusion.loss)
NUM_CLASSES = {"shapes": 5, "mnist": 10, "fashion_mnist": 10, "cifar10": 10}  # imagefolder: one per sub-folder

# Samplers whose timestep grid ends at sigma = 0 instead of at t = 0 (diffusers' DPM-Solver schedulers).
SKIPS_ZERO = ("dpm_solver_pp", "dpm_solver_pp_sde")


def grid_points(steps: int, spacing: str, skip_zero: bool) -> int:
    """Points of the timestep grid that ``steps`` steps take (at most T: `spacing.spaced_timesteps`):
    a grid that ends at sigma = 0 (``skip_zero``) takes one point more on leading and linspace spacing
    and drops its final t = 0; trailing never reaches 0."""
    return steps + 1 if skip_zero and spacing != "trailing" else steps


MIN_VAL_IMAGES = 2  # the evaluator's reference statistics (a mean and a covariance) need two validation images


def val_size(n: int, val_fraction: float, official_split: bool) -> int:
    """Validation images of n (``data.count``) images, before any cap by what a source holds:
    round(n * val_fraction), kept so that both sides get one when n >= 2; a dataset with official
    splits (``official_split``, torchvision's) takes the rest of n after round(n (1 - val_fraction))
    train images."""
    if official_split:
        return n - round(n * (1.0 - val_fraction))
    return min(max(round(n * val_fraction), 1), n - 1) if n >= 2 else 0
